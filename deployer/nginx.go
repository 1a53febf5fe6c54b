package deployer

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// The upstream file is the user's: rollout only flips the "down" parameter
// of the "server ADDR:PORT ...;" lines of one upstream block and keeps every
// other byte (comments, keepalive, least_conn, weights). It expects one
// server directive per line, which is how upstream files are written.

var (
	upstreamOpenRE = regexp.MustCompile(`^\s*upstream\s+([A-Za-z0-9_.-]+)\s*\{\s*(#.*)?$`)
	serverLineRE   = regexp.MustCompile(`^(\s*server\s+)(\S+?):(\d+)((?:\s+[^;#\s]+)*)\s*;(.*)$`)
)

// upstreamServers reads the ports of addr's server lines in the named
// upstream block, and whether each is marked down.
func upstreamServers(content []byte, upstream, addr string) (map[int]bool, error) {
	servers := map[int]bool{}
	_, err := rewriteServers(content, upstream, addr, func(port int, params []string) []string {
		servers[port] = hasParam(params, "down")
		return params
	})
	return servers, err
}

// setServerDown returns content with addr:port marked down (or not) in the
// named upstream block. It fails if the block or the line is missing.
func setServerDown(content []byte, upstream, addr string, port int, down bool) ([]byte, error) {
	found := false
	out, err := rewriteServers(content, upstream, addr, func(p int, params []string) []string {
		if p != port {
			return params
		}
		found = true
		params = removeParam(params, "down")
		if down {
			params = append(params, "down")
		}
		return params
	})
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("upstream %q has no line \"server %s:%d;\"", upstream, addr, port)
	}
	return out, nil
}

// rewriteServers calls fn for each "server addr:PORT ...;" line of the named
// upstream block and replaces the line's parameters with what fn returns.
// Lines fn leaves unchanged keep their exact bytes.
func rewriteServers(content []byte, upstream, addr string, fn func(port int, params []string) []string) ([]byte, error) {
	var out bytes.Buffer
	inBlock, seenBlock := false, false
	for _, line := range splitLines(content) {
		text := strings.TrimRight(line, "\n")
		switch {
		case !inBlock:
			if m := upstreamOpenRE.FindStringSubmatch(text); m != nil && m[1] == upstream {
				inBlock, seenBlock = true, true
			}
		case strings.TrimSpace(text) == "}":
			inBlock = false
		default:
			if m := serverLineRE.FindStringSubmatch(text); m != nil && m[2] == addr {
				port, _ := strconv.Atoi(m[3])
				params := strings.Fields(m[4])
				if next := fn(port, params); strings.Join(next, " ") != strings.Join(params, " ") {
					nl := line[len(text):]
					line = m[1] + m[2] + ":" + m[3]
					if len(next) > 0 {
						line += " " + strings.Join(next, " ")
					}
					line += ";" + m[5] + nl
				}
			}
		}
		out.WriteString(line)
	}
	if !seenBlock {
		return nil, fmt.Errorf("upstream %q not found", upstream)
	}
	return out.Bytes(), nil
}

func splitLines(b []byte) []string {
	s := string(b)
	var lines []string
	for s != "" {
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			lines = append(lines, s)
			break
		}
		lines = append(lines, s[:i+1])
		s = s[i+1:]
	}
	return lines
}

func hasParam(params []string, p string) bool {
	for _, x := range params {
		if x == p {
			return true
		}
	}
	return false
}

func removeParam(params []string, p string) []string {
	out := params[:0:0]
	for _, x := range params {
		if x != p {
			out = append(out, x)
		}
	}
	return out
}

// addServer returns content with a "server addr:port;" line added to the
// named upstream block, after its last server line (with its indentation),
// or before the block's closing brace.
func addServer(content []byte, upstream, addr string, port int) ([]byte, error) {
	var out bytes.Buffer
	lines := splitLines(content)
	start, end, last := -1, -1, -1
	for i, line := range lines {
		text := strings.TrimRight(line, "\n")
		switch {
		case start < 0:
			if m := upstreamOpenRE.FindStringSubmatch(text); m != nil && m[1] == upstream {
				start = i
			}
		case end < 0 && strings.TrimSpace(text) == "}":
			end = i
		case end < 0 && serverLineRE.MatchString(text):
			last = i
		}
	}
	if start < 0 || end < 0 {
		return nil, fmt.Errorf("upstream %q not found", upstream)
	}
	indent, at := "    ", end
	if last >= 0 {
		text := lines[last]
		indent, at = text[:len(text)-len(strings.TrimLeft(text, " \t"))], last+1
		if !strings.HasSuffix(lines[last], "\n") {
			lines[last] += "\n"
		}
	}
	for i, line := range lines {
		if i == at {
			fmt.Fprintf(&out, "%sserver %s:%d;\n", indent, addr, port)
		}
		out.WriteString(line)
	}
	return out.Bytes(), nil
}

// removeServer returns content without addr:port's server line in the
// named upstream block.
func removeServer(content []byte, upstream, addr string, port int) ([]byte, error) {
	var out bytes.Buffer
	inBlock, found := false, false
	for _, line := range splitLines(content) {
		text := strings.TrimRight(line, "\n")
		switch {
		case !inBlock:
			if m := upstreamOpenRE.FindStringSubmatch(text); m != nil && m[1] == upstream {
				inBlock = true
			}
		case strings.TrimSpace(text) == "}":
			inBlock = false
		default:
			if m := serverLineRE.FindStringSubmatch(text); m != nil && m[2] == addr && m[3] == strconv.Itoa(port) {
				found = true
				continue
			}
		}
		out.WriteString(line)
	}
	if !found {
		return nil, fmt.Errorf("upstream %q has no line \"server %s:%d;\"", upstream, addr, port)
	}
	return out.Bytes(), nil
}
