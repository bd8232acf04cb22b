package otel

import "testing"

// TestMsgSizer: a size is told only when the stream's counts advanced by
// exactly one message; a switch to another stream (a retry's new attempt,
// with replayed messages) or a held-back message gives -1.
func TestMsgSizer(t *testing.T) {
	var z msgSizer
	for i, step := range []struct {
		msgs, bytes, want int64
	}{
		{1, 10, 10}, // first message
		{2, 25, 15}, // next one
		{2, 25, -1}, // no message went out (held back for a retry)
		{3, 12, -1}, // a new attempt's stream: counts restarted, replays included
		{4, 20, 8},  // sized again from there
		{6, 40, -1}, // two messages at once: unknown
		{7, 40, 0},  // an empty message
		{8, 39, -1}, // bytes went down: another stream
	} {
		if got := z.next(step.msgs, step.bytes); got != step.want {
			t.Errorf("step %d: next(%d, %d) = %d, want %d", i, step.msgs, step.bytes, got, step.want)
		}
	}
}
