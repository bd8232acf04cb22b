package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/peterh/liner"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/status"
)

// lineArgs splits the arguments of a call: a line that starts with "{" or
// "[" is one raw JSON argument (its quotes are JSON's, not the shell's);
// anything else is split into shell words.
func lineArgs(line string) []string {
	if t := strings.TrimSpace(line); strings.HasPrefix(t, "{") || strings.HasPrefix(t, "[") {
		return []string{t}
	}
	words, _ := splitWords(line) // the caller checked the quoting
	args := make([]string, len(words))
	for i, w := range words {
		args[i] = w.text
	}
	return args
}

// callByName calls the method named by word (./m, m, a path or
// Service.method) with the arguments args.
func (sh *shell) callByName(word string, args []string) {
	n, err := sh.resolve(word)
	if err != nil {
		if !strings.ContainsAny(word, "/.") {
			switch {
			case sh.sess != nil:
				err = fmt.Errorf("unknown command or method %q (%s has: %s; 'help' lists commands)", word, sh.sess.svc.Name, methodList(sh.sess.svc))
			case strings.HasPrefix(sh.cwd, "/services/"):
				err = fmt.Errorf("unknown command or method %q (%s; 'help' lists commands)", word, strings.TrimPrefix(err.Error(), "no method "+word+" in "))
			default:
				err = fmt.Errorf("unknown command or method %q ('help' lists commands; cd into a service to call its methods)", word)
			}
		}
		sh.printErr(status.Wrap(status.NotFound, err))
		return
	}
	if n.kind != nodeMethod {
		sh.printErr(status.Errorf(status.InvalidArgument, "%s is a directory, not a method (cd into it or ls it)", n.path(sh.ct)))
		return
	}
	sh.call(n.svc, n.m, args)
}

// call makes one call and prints its outcome.
func (sh *shell) call(svc *contract.Service, m *contract.Method, args []string) {
	p, ok := handler.ParsePattern(m.Pattern)
	if !ok {
		sh.printErr(status.Errorf(status.Unimplemented, "method %s.%s has pattern %q, unknown to this shell", svc.Name, m.Name, m.Pattern))
		return
	}
	items, err := requestItems(sh.ct, m.Request, args, p.ClientStreams())
	if err != nil {
		sh.printErr(err)
		return
	}
	interactiveInput := items == nil && p.ClientStreams()
	if items == nil && !p.ClientStreams() {
		v, err := sh.promptFields(m.Request)
		if err != nil {
			sh.printErr(err)
			return
		}
		items = []any{v}
	}
	// Check every request against the contract before calling, so a typo
	// costs no round trip.
	for i, it := range items {
		if _, err := contract.FromJSONValue(sh.ct, m.Request, it); err != nil {
			sh.printErr(requestError(m, i, len(items), err))
			return
		}
	}

	var cc aster.Caller = sh.client
	switch {
	case sh.sess != nil && sh.sess.svc.Name == svc.Name && sh.sess.svc.Version == svc.Version:
		cc = sh.sess.s
	case svc.Scope == "session":
		tmp := sh.client.NewSession()
		defer func() {
			ctx, cancel := context.WithTimeout(sh.ctx, 5*time.Second)
			defer cancel()
			tmp.Close(ctx)
		}()
		cc = tmp
		if !sh.asJSON {
			fmt.Fprintf(sh.errw, "(%s is session-scoped: this call runs in a session of its own; 'session %s' keeps state across calls)\n", svc.Name, svc.Name)
		}
	}

	ctx, cancel := context.WithCancel(sh.ctx)
	defer cancel()
	if sh.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, sh.timeout)
		defer cancel()
	}
	var interrupted atomic.Bool // by Ctrl-C, not by a deadline or an error
	sh.mu.Lock()
	sh.cancelCall = func() { interrupted.Store(true); cancel() }
	sh.mu.Unlock()
	defer func() {
		sh.mu.Lock()
		sh.cancelCall = nil
		sh.mu.Unlock()
	}()

	name := svc.Name + "." + m.Name
	if !sh.asJSON {
		fmt.Fprintf(sh.out, "→ %s(%s)\n", name, renderArgs(items, interactiveInput))
	}
	start := time.Now()
	dc, err := aster.CallDynamic(ctx, cc, sh.ct, name, aster.Version(svc.Version))
	if err != nil {
		sh.callFailed(m, err, interrupted.Load(), start, 0)
		return
	}
	defer dc.Close()

	// Requests go out from a goroutine for streamed requests (so responses
	// print as they arrive); the single request of the other patterns is
	// sent before reading.
	sendDone := make(chan error, 1)
	if p.ClientStreams() {
		go func() {
			sendDone <- sh.sendStream(ctx, dc, m, items, interactiveInput, cancel)
		}()
	} else {
		err := dc.SendValue(items[0])
		if err == nil {
			err = dc.CloseSend()
		}
		if err != nil && err != io.EOF {
			sh.callFailed(m, err, interrupted.Load(), start, 0)
			return
		}
		sendDone <- nil
	}

	n := 0
	var callErr error
	for {
		v, err := dc.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			callErr = err
			break
		}
		if p.ServerStreams() {
			sh.printItem(n, v)
		} else {
			sh.printResponse(v, time.Since(start))
		}
		n++
	}
	if callErr != nil {
		cancel() // stop the request reader
	}
	var sendErr error
	sendFinished := false
	select {
	case sendErr = <-sendDone:
		sendFinished = true
	default:
		// Still reading requests (a bidi call the server ended early):
		// report the outcome now, then wait for the reader.
	}
	switch {
	case sendErr != nil:
		sh.printErr(sendErr)
	case callErr != nil:
		sh.callFailed(m, callErr, interrupted.Load(), start, n)
	case p.ServerStreams() && !sh.asJSON:
		fmt.Fprintf(sh.out, "✓ stream ended: %d %s in %s\n", n, plural(n, "item", "items"), elapsed(time.Since(start)))
	}
	if !sendFinished {
		if interactiveInput && sh.interactive {
			// The request reader is still at its prompt: a Ctrl-C that
			// came as a signal (typed while the terminal was between two
			// prompts) or the server's end of a bidi call cannot unblock
			// it, only a line can.
			fmt.Fprintln(sh.errw, "(the call has ended: press Enter to return to the prompt)")
		}
		if err := <-sendDone; err != nil {
			sh.printErr(err)
		}
	}
}

// sendStream sends the requests of a client-stream or bidi call: items, or
// lines read from the input until an empty line (or end of input). A
// Ctrl-C at the input prompt cancels the call.
func (sh *shell) sendStream(ctx context.Context, dc *aster.DynamicCall, m *contract.Method, items []any, interactive bool, cancel context.CancelFunc) error {
	if !interactive {
		for _, it := range items {
			if err := dc.SendValue(it); err != nil {
				return nil // the call ended; Recv reports why
			}
		}
		dc.CloseSend()
		return nil
	}
	if sh.interactive && !sh.asJSON {
		sh.outMu.Lock()
		fmt.Fprintf(sh.out, "(one %s per line, as JSON or k=v; an empty line ends the stream)\n", m.Request)
		sh.outMu.Unlock()
	}
	prompt := ""
	if sh.interactive {
		prompt = m.Name + "… "
	}
	defer sh.setInputPrompt("")
	for i := 1; ; i++ {
		if ctx.Err() != nil {
			return nil
		}
		sh.setInputPrompt(prompt)
		line, err := sh.in.Prompt(prompt)
		sh.setInputPrompt("")
		switch {
		case ctx.Err() != nil:
			return nil // the call ended while the line was typed: not sent
		case errors.Is(err, liner.ErrPromptAborted):
			sh.interrupt() // cancels the call
			return nil
		case err == io.EOF:
			dc.CloseSend()
			return nil
		case err != nil:
			cancel()
			return err
		}
		if strings.TrimSpace(line) == "" {
			dc.CloseSend()
			return nil
		}
		its, err := requestItems(sh.ct, m.Request, lineArgs(line), true)
		if err != nil {
			sh.printErr(fmt.Errorf("request not sent: %w", err))
			i--
			continue
		}
		for _, it := range its {
			if err := dc.SendValue(it); err != nil {
				if aster.IsJSONError(err) {
					sh.printErr(requestError(m, 0, 1, err))
					i--
					continue
				}
				return nil // the call ended; Recv reports why
			}
		}
	}
}

// promptFields asks for each field of a request type when a unary or
// server-stream method is called without arguments on a terminal. Elsewhere
// the request is {} (every field its zero value).
func (sh *shell) promptFields(typeName string) (any, error) {
	v := map[string]any{}
	def := sh.ct.Type(typeName)
	if !sh.interactive || def == nil || len(def.Fields) == 0 {
		return v, nil
	}
	fmt.Fprintf(sh.out, "(%s: enter each field, empty to leave it unset)\n", typeName)
	for _, f := range def.Fields {
		for {
			line, err := sh.in.Prompt(fmt.Sprintf("  %s (%s): ", f.Name, f.Type.String()))
			if errors.Is(err, liner.ErrPromptAborted) || err == io.EOF {
				return nil, status.New(status.Canceled, "call abandoned")
			}
			if err != nil {
				return nil, err
			}
			if line == "" {
				break
			}
			if err := setKV(sh.ct, typeName, v, f.Name, line); err != nil {
				sh.printErr(err)
				continue
			}
			break
		}
	}
	return v, nil
}

// requestError reports a request that does not fit the method's type.
func requestError(m *contract.Method, i, n int, err error) error {
	var je *contract.JSONError
	if errors.As(err, &je) {
		where := "request"
		if n > 1 {
			where = fmt.Sprintf("request %d", i+1)
		}
		return argErrorf("%s does not fit %s: %v", where, m.Request, je)
	}
	return err
}

// callFailed prints the status a call ended with. PERMISSION_DENIED names
// the capability the contract says the method requires.
func (sh *shell) callFailed(m *contract.Method, err error, interrupted bool, start time.Time, n int) {
	if interrupted {
		msg := fmt.Sprintf("^C canceled after %s", elapsed(time.Since(start)))
		if n > 0 {
			msg += fmt.Sprintf(" (%d %s)", n, plural(n, "item", "items"))
		}
		sh.printErr(status.New(status.Canceled, msg))
		return
	}
	st := status.FromError(deniedWithRequirement(m, err))
	msg := st.Message()
	if !sh.asJSON {
		msg += " (" + elapsed(time.Since(start)) + ")"
	}
	sh.printErr(status.New(st.Code(), msg))
	if sh.sess != nil && (st.Code() == status.Unavailable || strings.HasPrefix(st.Message(), "dial ")) {
		sh.sess.lost = true
		fmt.Fprintf(sh.errw, "(the connection of the session of %s is gone, and with it the session's state: 'end' it and open a new one)\n", sh.sess.svc.Name)
	}
}

// printResponse prints a unary or client-stream response.
func (sh *shell) printResponse(v any, d time.Duration) {
	sh.outMu.Lock()
	defer sh.outMu.Unlock()
	if sh.asJSON {
		writeCompactJSON(sh.out, v)
		return
	}
	fmt.Fprintf(sh.out, "✓ %s\n", elapsed(d))
	writeIndentedJSON(sh.out, v)
}

// setInputPrompt records the prompt of a request line being read while
// responses may arrive (bidi), "" when none is.
func (sh *shell) setInputPrompt(p string) {
	sh.outMu.Lock()
	sh.inputPrompt = p
	sh.outMu.Unlock()
}

// printItem prints one item of a response stream as it arrives. While a
// request line is being typed (bidi on a terminal), the item replaces the
// prompt's line and the prompt is shown again below it.
func (sh *shell) printItem(n int, v any) {
	sh.outMu.Lock()
	defer sh.outMu.Unlock()
	if sh.asJSON {
		writeCompactJSON(sh.out, v)
		return
	}
	if sh.inputPrompt != "" {
		fmt.Fprint(sh.out, "\r\x1b[K")
	}
	fmt.Fprintf(sh.out, "#%d ", n)
	writeCompactJSON(sh.out, v)
	if sh.inputPrompt != "" {
		fmt.Fprint(sh.out, sh.inputPrompt)
	}
}

func writeCompactJSON(w io.Writer, v any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(w, "(unprintable: %v)\n", err)
		return
	}
	w.Write(b.Bytes())
}

func writeIndentedJSON(w io.Writer, v any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(w, "(unprintable: %v)\n", err)
		return
	}
	w.Write(b.Bytes())
}

// renderArgs renders the requests for the call line: k="v" pairs for one
// object, a count for several.
func renderArgs(items []any, interactive bool) string {
	switch {
	case interactive:
		return "…"
	case len(items) == 0:
		return ""
	case len(items) > 1:
		return fmt.Sprintf("%d requests", len(items))
	}
	m, ok := items[0].(map[string]any)
	if !ok {
		b, _ := json.Marshal(items[0])
		return string(b)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		enc.Encode(m[k])
		parts[i] = k + "=" + strings.TrimSpace(b.String())
	}
	return strings.Join(parts, ", ")
}

// elapsed renders a duration with three significant digits.
func elapsed(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(10 * time.Microsecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
