package deployer

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// The upstream file is the user's: rollout only flips the "down" parameter
// of the "server ADDR:PORT ...;" lines of one upstream block and keeps every
// other byte (comments, keepalive, least_conn, weights, blanks). It expects
// one server directive per line, which is how upstream files are written;
// the block ends at the first "}" outside a comment.

var (
	upstreamOpenRE = regexp.MustCompile(`^\s*upstream\s+([A-Za-z0-9_.-]+)\s*\{\s*(#.*)?$`)
	// The groups: the line up to the address, the address, the port, the
	// parameters as written (each with the blanks before it), the rest.
	serverLineRE = regexp.MustCompile(`^(\s*server\s+)(\S+?):(\d+)((?:\s+[^;#\s]+)*)(\s*;.*)$`)
	paramRE      = regexp.MustCompile(`\s+[^;#\s]+`)
)

// serverLine parses text, a line without its "\n", as a server line of
// addr: its port and the submatches of serverLineRE.
func serverLine(text, addr string) (port int, m []string, ok bool) {
	m = serverLineRE.FindStringSubmatch(text)
	if m == nil || m[2] != addr {
		return 0, nil, false
	}
	port, err := strconv.Atoi(m[3]) // as Nginx reads it: 03000 is 3000
	return port, m, err == nil
}

// closesBlock says whether text, a line of a block, ends it: it has a "}"
// outside a comment.
func closesBlock(text string) bool {
	code, _, _ := strings.Cut(text, "#")
	return strings.Contains(code, "}")
}

// upstreamServers reads the ports of addr's server lines in the named
// upstream block, and whether each is marked down.
func upstreamServers(content []byte, upstream, addr string) (map[int]bool, error) {
	servers := map[int]bool{}
	_, err := rewriteServers(content, upstream, addr, func(port int, params string) string {
		servers[port] = slices.Contains(strings.Fields(params), "down")
		return params
	})
	return servers, err
}

// setServerDown returns content with addr:port marked down (or not) in the
// named upstream block. It fails if the block or the line is missing.
func setServerDown(content []byte, upstream, addr string, port int, down bool) ([]byte, error) {
	found := false
	out, err := rewriteServers(content, upstream, addr, func(p int, params string) string {
		if p != port {
			return params
		}
		found = true
		if down {
			return withParam(params, "down")
		}
		return withoutParam(params, "down")
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
// upstream block with the line's parameters as written, and replaces them
// with what fn returns. Lines fn leaves unchanged keep their exact bytes.
func rewriteServers(content []byte, upstream, addr string, fn func(port int, params string) string) ([]byte, error) {
	var out bytes.Buffer
	inBlock, seenBlock := false, false
	for _, line := range splitLines(content) {
		text := strings.TrimRight(line, "\n")
		if !inBlock {
			if m := upstreamOpenRE.FindStringSubmatch(text); m != nil && m[1] == upstream {
				inBlock, seenBlock = true, true
			}
			out.WriteString(line)
			continue
		}
		if port, m, ok := serverLine(text, addr); ok {
			if next := fn(port, m[4]); next != m[4] {
				line = m[1] + m[2] + ":" + m[3] + next + m[5] + line[len(text):]
			}
		}
		inBlock = !closesBlock(text)
		out.WriteString(line)
	}
	if !seenBlock {
		return nil, fmt.Errorf("upstream %q not found", upstream)
	}
	return out.Bytes(), nil
}

// splitLines splits b after each "\n"; the last line may have none.
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

// withParam is params, as written, with p added last unless it is there.
func withParam(params, p string) string {
	if slices.Contains(strings.Fields(params), p) {
		return params
	}
	return params + " " + p
}

// withoutParam is params, as written, without p and the blanks before it.
func withoutParam(params, p string) string {
	var out strings.Builder
	for _, param := range paramRE.FindAllString(params, -1) {
		if strings.TrimSpace(param) != p {
			out.WriteString(param)
		}
	}
	return out.String()
}

// addServer returns content with a "server addr:port;" line added to the
// named upstream block, after its last server line (with its indentation
// and line ending), or before the line that closes the block.
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
		case end < 0 && closesBlock(text):
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
	}
	nl := "\n" // lines[at-1] is the block's, before at <= end: it ends in one
	if strings.HasSuffix(lines[at-1], "\r\n") {
		nl = "\r\n"
	}
	for i, line := range lines {
		if i == at {
			fmt.Fprintf(&out, "%sserver %s:%d;%s", indent, addr, port, nl)
		}
		out.WriteString(line)
	}
	return out.Bytes(), nil
}

// removeServer returns content without addr:port's server lines in the
// named upstream block. It refuses to remove a line holding more than the
// server and a comment (another directive, the block's "}").
func removeServer(content []byte, upstream, addr string, port int) ([]byte, error) {
	var out bytes.Buffer
	inBlock, found := false, false
	for i, line := range splitLines(content) {
		text := strings.TrimRight(line, "\n")
		if !inBlock {
			if m := upstreamOpenRE.FindStringSubmatch(text); m != nil && m[1] == upstream {
				inBlock = true
			}
			out.WriteString(line)
			continue
		}
		if p, m, ok := serverLine(text, addr); ok && p == port {
			_, rest, _ := strings.Cut(m[5], ";")
			if rest = strings.TrimSpace(rest); rest != "" && !strings.HasPrefix(rest, "#") {
				return nil, fmt.Errorf("upstream %q: line %d has more than \"server %s:%d;\" on it; put it on a line of its own", upstream, i+1, addr, port)
			}
			found = true
			continue
		}
		inBlock = !closesBlock(text)
		out.WriteString(line)
	}
	if !found {
		return nil, fmt.Errorf("upstream %q has no line \"server %s:%d;\"", upstream, addr, port)
	}
	return out.Bytes(), nil
}
