package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// These tests type into "aster shell" running under a pseudo-terminal, as a
// person would (Tab, Ctrl-C, Ctrl-D), and read what the screen shows.

// screen is a shell running under a pty.
type screen struct {
	t    *testing.T
	pty  *os.File
	cmd  *exec.Cmd
	mu   sync.Mutex
	buf  bytes.Buffer // everything the program wrote, escape codes removed
	mark int          // waitFor searches after this offset
	read chan struct{}
	done chan struct{} // closed when the program has exited
	err  error         // its exit error, after done
}

// ansi matches the terminal control sequences liner writes.
var ansi = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]|\r|\a`)

// startScreen runs "aster shell" with args under a pty, HOME set to home.
func startScreen(t *testing.T, home string, args ...string) *screen {
	t.Helper()
	asterBin, _ := binaries(t)
	cmd := exec.Command(asterBin, append([]string{"shell"}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+home, "TERM=xterm")
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 50, Cols: 200})
	if err != nil {
		t.Fatal(err)
	}
	s := &screen{t: t, pty: f, cmd: cmd, read: make(chan struct{}, 1), done: make(chan struct{})}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		r := bufio.NewReader(f)
		var raw bytes.Buffer
		b := make([]byte, 4096)
		for {
			n, err := r.Read(b)
			if n > 0 {
				raw.Write(b[:n])
				s.mu.Lock()
				s.buf.Reset()
				s.buf.WriteString(ansi.ReplaceAllString(raw.String(), ""))
				s.mu.Unlock()
				select {
				case s.read <- struct{}{}:
				default:
				}
			}
			if err != nil {
				return // EIO once the program has exited
			}
		}
	}()
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			cmd.Process.Kill()
			<-s.done
		}
		f.Close()
		<-readDone
	})
	return s
}

// send types keys.
func (s *screen) send(keys string) {
	s.t.Helper()
	if _, err := s.pty.Write([]byte(keys)); err != nil {
		s.t.Fatalf("typing %q: %v", keys, err)
	}
}

// interruptPrompt types Ctrl-C at a line-editor prompt once the editor has
// the terminal: liner prints its prompt before it turns the terminal's
// signal keys off, and a Ctrl-C typed in between is a SIGINT instead of a
// key, which cannot end the prompt (the shell's own behaviour for a person,
// who cannot type within that instant; a test can). It waits, up to 10 s,
// until the terminal's ISIG flag is off.
func (s *screen) interruptPrompt() {
	s.t.Helper()
	var n uint32
	if err := withFd(s.pty, func(fd int) (err error) { n, err = unix.IoctlGetUint32(fd, unix.TIOCGPTN); return err }); err != nil {
		s.t.Fatalf("pty number: %v", err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDONLY|syscall.O_NOCTTY, 0)
	if err != nil {
		s.t.Fatal(err)
	}
	defer tty.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var tio *unix.Termios
		if err := withFd(tty, func(fd int) (err error) { tio, err = unix.IoctlGetTermios(fd, unix.TCGETS); return err }); err != nil {
			s.t.Fatalf("terminal mode: %v", err)
		}
		if tio.Lflag&unix.ISIG == 0 {
			break
		}
		if time.Now().After(deadline) {
			s.t.Fatal("the line editor did not take the terminal within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
	s.send("\x03")
}

// withFd runs fn with f's descriptor (without putting f in blocking mode,
// as Fd would).
func withFd(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// waitFor waits until the screen shows want after the last match and
// returns the text up to the end of the match.
func (s *screen) waitFor(want string) string {
	s.t.Helper()
	seen, _ := s.waitForFirst(want)
	return seen
}

// waitForFirst is waitFor for the first of several texts to appear; it
// also returns the one that did.
func (s *screen) waitForFirst(wants ...string) (seen, which string) {
	s.t.Helper()
	want := strings.Join(wants, `" or "`)
	deadline := time.After(30 * time.Second)
	for {
		s.mu.Lock()
		text := s.buf.String()
		s.mu.Unlock()
		if s.mark <= len(text) {
			at := -1
			for _, w := range wants {
				if i := strings.Index(text[s.mark:], w); i >= 0 && (at < 0 || i < at) {
					at, which = i, w
				}
			}
			if at >= 0 {
				seen := text[s.mark : s.mark+at+len(which)]
				s.mark += at + len(which)
				return seen, which
			}
		}
		select {
		case <-s.read:
		case <-s.done:
			s.mu.Lock()
			text = s.buf.String()
			s.mu.Unlock()
			rest := text[min(s.mark, len(text)):]
			if slices.ContainsFunc(wants, func(w string) bool { return strings.Contains(rest, w) }) {
				continue
			}
			s.t.Fatalf("shell exited (%v) before showing %q; screen after the last match:\n%s", s.err, want, text[min(s.mark, len(text)):])
		case <-deadline:
			s.t.Fatalf("screen does not show %q; after the last match:\n%s", want, text[min(s.mark, len(text)):])
		}
	}
}

// exited waits for the program to end and returns its exit status.
func (s *screen) exited() int {
	s.t.Helper()
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.t.Fatal("shell did not exit")
	}
	var ee *exec.ExitError
	if errors.As(s.err, &ee) {
		return ee.ExitCode()
	}
	if s.err != nil {
		s.t.Fatal(s.err)
	}
	return 0
}

// Chapter 1: connect, Tab-complete the way to MissionControl and getStatus,
// call it; the field prompt; history across runs; Ctrl-D exits.
func TestShellPTYChapter1(t *testing.T) {
	addr := startServer(t)
	home := t.TempDir()
	s := startScreen(t, home, addr)
	s.waitFor("'help' lists commands")
	s.waitFor("/> ")

	s.send("cd serv\t")
	s.waitFor("cd services/")
	s.send("Mi\t")
	s.waitFor("cd services/MissionControl/")
	s.send("\r")
	s.waitFor("/services/MissionControl> ")

	// Two Tabs list the candidates; one completes a unique prefix.
	s.send("./\t\t")
	s.waitFor("./getStatus")
	s.waitFor("./tailLogs")
	s.send("getS\t")
	s.waitFor("./getStatus ")
	s.send("ag\t")
	s.waitFor("./getStatus agent_id=")
	s.send(`"edge-node-7"` + "\r")
	s.waitFor(`→ MissionControl.getStatus(agent_id="edge-node-7")`)
	s.waitFor("✓ ")
	s.waitFor(`"uptime_secs": 3600`)
	s.waitFor("/services/MissionControl> ")

	// No arguments: the shell asks for each field.
	s.send("./getStatus\r")
	s.waitFor("agent_id (string): ")
	s.send("prompted\r")
	s.waitFor(`→ MissionControl.getStatus(agent_id="prompted")`)
	s.waitFor(`"agent_id": "prompted"`)
	s.waitFor("/services/MissionControl> ")

	s.send("\x04") // Ctrl-D
	if code := s.exited(); code != 0 {
		t.Fatalf("exit status %d after Ctrl-D", code)
	}
	hist, err := os.ReadFile(filepath.Join(home, ".aster", "history"))
	if err != nil {
		t.Fatal(err)
	}
	wantIn(t, "history", string(hist), "cd services/MissionControl/\n", "./getStatus agent_id=\"edge-node-7\"\n")
	if fi, err := os.Stat(filepath.Join(home, ".aster", "history")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("history file mode: %v %v", fi.Mode(), err)
	}

	// The next run recalls it with the up arrow.
	s = startScreen(t, home, addr)
	s.waitFor("/> ")
	s.send("\x1b[A\x1b[A\x1b[A") // ./getStatus, ./getStatus agent_id=..., cd ...
	s.waitFor("cd services/MissionControl/")
	s.send("\r")
	s.waitFor("/services/MissionControl> ")
	s.send("exit\r")
	if code := s.exited(); code != 0 {
		t.Fatalf("exit status %d after exit", code)
	}
}

// Chapter 2: tail the logs, Ctrl-C cancels the stream and the shell goes on;
// Ctrl-C twice quickly exits.
func TestShellPTYChapter2(t *testing.T) {
	addr := startServer(t)
	pushLogs(t, addr, "warn")
	s := startScreen(t, t.TempDir(), addr)
	s.waitFor("/> ")
	s.send("cd services/MissionControl\r")
	s.waitFor("/services/MissionControl> ")
	s.send(`./tailLogs agent_id="edge-7" level="warn"` + "\r")
	s.waitFor(`→ MissionControl.tailLogs(agent_id="edge-7", level="warn")`)
	s.waitFor(`#0 {"agent_id":"edge-7","level":"warn"`)
	s.waitFor(`#1 {"agent_id":"edge-7","level":"warn"`)
	s.send("\x03") // Ctrl-C
	s.waitFor("CANCELED: ^C canceled after")
	s.waitFor("/services/MissionControl> ")

	// Still connected and usable.
	s.send("./getStatus agent_id=after\r")
	s.waitFor(`"agent_id": "after"`)
	s.waitFor("/services/MissionControl> ")

	// A client stream typed line by line; the empty line sends it.
	s.send("./ingestMetrics\r")
	s.waitFor("ingestMetrics… ")
	s.send(`{"name":"cpu","value":0.5}` + "\r")
	s.waitFor("ingestMetrics… ")
	s.send("name=mem value=3\r")
	s.waitFor("ingestMetrics… ")
	s.send("\r")
	s.waitFor(`"accepted": 2`)
	s.waitFor("/services/MissionControl> ")

	// Ctrl-C while typing a stream's requests abandons the call.
	s.send("./ingestMetrics\r")
	s.waitFor("ingestMetrics… ")
	s.send("name=lost value=1\r")
	s.waitFor("ingestMetrics… ")
	s.interruptPrompt()
	s.waitFor("CANCELED: ^C canceled after")
	s.waitFor("/services/MissionControl> ")
	s.send("./getStatus agent_id=still-here\r")
	s.waitFor(`"agent_id": "still-here"`)
	s.waitFor("/services/MissionControl> ")

	s.interruptPrompt()
	s.waitFor("Ctrl-C again to exit")
	s.interruptPrompt()
	if code := s.exited(); code != 0 {
		t.Fatalf("exit status %d after Ctrl-C Ctrl-C", code)
	}
}

// Chapter 4: the session subshell; then the server goes away while the
// session is open.
func TestShellPTYChapter4(t *testing.T) {
	_, serverBin := binaries(t)
	srv := exec.Command(serverBin)
	srv.Env = append(os.Environ(), "ASTER_BIND_ADDR=127.0.0.1:0")
	out, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	srvDone := make(chan struct{})
	go func() { srv.Wait(); close(srvDone) }()
	t.Cleanup(func() { srv.Process.Kill(); <-srvDone })
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		t.Fatal("server printed no address")
	}
	addr := sc.Text()
	go io.Copy(io.Discard, out)

	s := startScreen(t, t.TempDir(), addr)
	s.waitFor("/> ")
	s.send("cd services\r")
	s.waitFor("/services> ")
	s.send("session Ag\t")
	s.waitFor("session AgentSession")
	s.send("\r")
	s.waitFor("AgentSession~ ")
	s.send(`register agent_id="edge-7" capabilities='["gpu"]'` + "\r")
	s.waitFor(`→ AgentSession.register(agent_id="edge-7", capabilities=["gpu"])`)
	s.waitFor(`"task_id": "train-42"`)
	s.waitFor("AgentSession~ ")
	s.send("runC\t")
	s.waitFor("runCommand ")
	s.send(`command="echo hello from the agent"` + "\r")
	s.waitFor(`"stdout":"hello from the agent\n"`)
	s.waitFor("AgentSession~ ")
	// Bidi typed line by line: each response shows while input goes on.
	s.send("runCommand\r")
	s.waitFor("runCommand… ")
	s.send(`command="echo first"` + "\r")
	s.waitFor(`#0 {"exit_code":0,"stderr":"","stdout":"first\n"}`)
	s.send(`{"command":"echo second"}` + "\r")
	s.waitFor(`#1 {"exit_code":0,"stderr":"","stdout":"second\n"}`)
	s.send("\r")
	s.waitFor("✓ stream ended: 2 items in")
	s.waitFor("AgentSession~ ")
	s.send("end\r")
	s.waitFor("session of AgentSession ended")
	s.waitFor("/services> ")

	// The server dies while a session is open: calls fail clearly and the
	// shell stays.
	s.send("session AgentSession\r")
	s.waitFor("AgentSession~ ")
	s.send("register agent_id=x\r")
	s.waitFor(`"task_id": "idle"`)
	s.waitFor("AgentSession~ ")
	// A server that vanishes without closing the connection (SIGKILL) would
	// leave the call waiting for QUIC's idle timeout: Ctrl-C gives up on it.
	// A server that shuts down closes the connection: the call fails.
	srv.Process.Signal(syscall.SIGTERM)
	<-srvDone
	s.send("register agent_id=y\r")
	s.waitFor("→ AgentSession.register")
	// The session's connection is gone: the call fails at once with
	// UNAVAILABLE, without a redial (a session cannot move). Whether the
	// client saw the close before it opened the call's stream ("session
	// lost") or after ("connection closed by peer ... server shutting
	// down") is a race; the outcome and the hint are the same.
	s.waitFor("UNAVAILABLE: ")
	s.waitFor("the session's state: 'end' it and open a new one")
	s.waitFor("AgentSession~ ")
	s.send("end\r")
	s.waitFor("session of AgentSession ended (its connection was lost)")
	s.waitFor("/services> ")
	s.send("exit\r")
	if code := s.exited(); code != 0 {
		t.Fatalf("exit status %d", code)
	}
}
