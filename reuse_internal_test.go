package aster

import "os"

// ASTER_STREAM_REUSE=off runs the package's tests with clients that do not
// reuse streams (WithStreamReuse's default off), so that the suite covers
// both: `ASTER_STREAM_REUSE=off go test .`.
func init() {
	if os.Getenv("ASTER_STREAM_REUSE") == "off" {
		streamReuseDefault = false
	}
}
