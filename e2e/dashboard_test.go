package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// artifactsDir is where tests leave files for people (the dashboard's
// screenshot): $ROLLOUT_TEST_ARTIFACTS, or ../build/test-artifacts.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("ROLLOUT_TEST_ARTIFACTS")
	if dir == "" {
		dir = "../build/test-artifacts"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(dir)
	return abs
}

// freePort is a loopback port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// The dashboard in a real browser (Debian's headless Chromium): the page
// shows every instance of the testbed, and updates when one is stopped.
func TestDashboardInChromium(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed (make deps installs Debian's package)")
	}
	resetFleet(t)
	cfg := fleetConfig(t, "0s")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command(rolloutBin, "dashboard", "-c", cfg, "--listen", addr, "--interval", "1s")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.Contains(line, "rollout dashboard for my-app on http://"+addr+"/") {
		t.Fatalf("the dashboard's first line: %q %v", line, err)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true), chromedp.WindowSize(1280, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	defer cancelT()

	want := len(fleet.Hosts) * instances
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+addr+"/"), chromedp.WaitVisible(chromedp.CSS(`tr[data-instance]`))); err != nil {
		t.Fatalf("load the dashboard: %v", err)
	}
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("tr[data-instance]").length`))
	if err != nil || rows != want {
		t.Fatalf("the page shows %d instances (%v), want %d", rows, err, want)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`[...document.querySelectorAll("tr[data-instance]")].every(r => r.dataset.ok === "true")`, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("not every instance shown ok: %v", err)
	}
	// The rows' text read at once, in the page: it draws the table again
	// at each poll, and a row found by one call may be gone at the next.
	texts, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](`Object.fromEntries([...document.querySelectorAll("tr[data-instance]")].map(r => [r.dataset.instance, r.innerText]))`))
	if err != nil {
		t.Fatalf("read the rows: %v", err)
	}
	for _, h := range fleet.Hosts {
		for i := 0; i < instances; i++ {
			sel := fmt.Sprintf(`%s:%d`, h.Addr, basePort+i)
			text, ok := texts[sel]
			if !ok {
				t.Fatalf("no row %s: %v", sel, texts)
			}
			// (The testbed's containers have no memory accounting: "-".)
			if f := strings.Split(text, "\t"); len(f) < 8 || f[1] != "active/running" || f[2] == "-" || f[6] != "in" || f[7] != "ok" {
				t.Errorf("%s reads %q", sel, text)
			}
		}
	}

	// Stop one: the page says so without a reload.
	h := fleet.Hosts[0]
	if out, err := fleet.Run(context.Background(), h, "sudo -n systemctl stop my-app@3002"); err != nil {
		t.Fatalf("stop an instance: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = fleet.Run(context.Background(), h, "sudo -n systemctl start my-app@3002") })
	sel := fmt.Sprintf(`tr[data-instance="%s:3002"]`, h.Addr)
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(sel+`[data-state="inactive"]`))); err != nil {
		t.Fatalf("the page did not show %s:3002 stopped: %v", h.Addr, err)
	}
	after, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](fmt.Sprintf(`[document.querySelector(%q)?.dataset.ok ?? "no row", document.getElementById("status").innerText]`, sel)))
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 2 || after[0] != "false" || !strings.Contains(after[1], "problem") {
		t.Errorf("after the stop: data-ok and status %q", after)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(artifactsDir(t), "dashboard.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))
}
