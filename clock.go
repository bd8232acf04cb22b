package aster

import "time"

// clockBase is monoNow's origin.
var clockBase = time.Now()

// monoNow reads the monotonic clock only, as a duration since clockBase:
// the idle times of reusable streams are kept with it, per call on both
// sides. time.Now also reads the wall clock, which doubles its cost (on a
// KVM guest about 125 ns against 47 ns). Inside a testing/synctest bubble
// the values are the bubble's time, offset by a constant: only their
// differences mean anything.
func monoNow() time.Duration { return time.Since(clockBase) }
