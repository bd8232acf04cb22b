package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aster-go/aster/status"
)

// Exit status of the aster command.
//
// Scripts can branch on the class of failure:
//
//	 0  OK; also a server stream or bidi call ended by --max or SIGINT
//	 1  unexpected CLI failure (a bug, or output that cannot be written)
//	 2  usage error: bad arguments or flags, a bad aster1 address, malformed
//	    JSON input, JSON that does not fit the method's request type, a
//	    credential file that cannot be read, a bad configuration
//	 3  connection failure: the server could not be dialled, the handshake
//	    failed (also a server whose key is not the address's), or its
//	    contract could not be fetched (not for errors after connecting)
//	11–26  the call failed with RPC status code 1–16 (exit = 10 + code):
//	    11 CANCELED           12 UNKNOWN            13 INVALID_ARGUMENT
//	    14 DEADLINE_EXCEEDED  15 NOT_FOUND          16 ALREADY_EXISTS
//	    17 PERMISSION_DENIED  18 RESOURCE_EXHAUSTED 19 FAILED_PRECONDITION
//	    20 ABORTED            21 OUT_OF_RANGE       22 UNIMPLEMENTED
//	    23 INTERNAL           24 UNAVAILABLE        25 DATA_LOSS
//	    26 UNAUTHENTICATED
//	    (unassigned codes 17–99 count as UNKNOWN: 12)
//	26  also: the server refused to admit the client (no credential, an
//	    expired one, one bound to another key or signed by another root)
//	30  the call failed with an application code (100 and above)
//	143 SIGTERM: the command was cancelled cleanly (128 + 15)
//
// An unknown service, version or method is NOT_FOUND (15), found in the
// server's contract before any call is made. The error is printed on stderr
// as "CODE_NAME: message", or with --json-errors as one JSON object:
//
//	{"code":"NOT_FOUND","code_num":5,"message":"unknown method ...","exit":15}
//
// Usage errors are reported with code INVALID_ARGUMENT, connection failures
// with the code of the dial error (UNAVAILABLE, DEADLINE_EXCEEDED,
// UNAUTHENTICATED, ...) and unexpected failures with UNKNOWN; the exit status
// (the "exit" field) is what tells them apart from a server's answer.
// "aster shell" reading a script exits with the status of the first
// command that failed.
const (
	ExitOK          = 0
	ExitFailure     = 1
	ExitUsage       = 2
	ExitConnect     = 3
	ExitRPCBase     = 10
	ExitApplication = 30
	ExitTerminated  = 143 // 128 + SIGTERM
)

// exitCodeTable is the table above for help texts.
const exitCodeTable = `Exit status:
   0  OK; also a server stream or bidi call ended by --max or SIGINT
   1  unexpected CLI failure (a bug, or output that cannot be written)
   2  usage error: bad arguments or flags, bad aster1 address, malformed JSON,
      JSON that does not fit the method's request type, a credential file
      that cannot be read, bad configuration
   3  connection failure: cannot dial, handshake or fetch the contract
  11-26  the call failed with RPC status code 1-16 (exit = 10 + code):
      11 CANCELED           12 UNKNOWN            13 INVALID_ARGUMENT
      14 DEADLINE_EXCEEDED  15 NOT_FOUND          16 ALREADY_EXISTS
      17 PERMISSION_DENIED  18 RESOURCE_EXHAUSTED 19 FAILED_PRECONDITION
      20 ABORTED            21 OUT_OF_RANGE       22 UNIMPLEMENTED
      23 INTERNAL           24 UNAVAILABLE        25 DATA_LOSS
      26 UNAUTHENTICATED    (unassigned codes 17-99 count as UNKNOWN: 12)
  26  also: the server refused to admit this client (the reason follows)
  30  the call failed with an application code (100 and above)
 143  SIGTERM: cancelled cleanly

Errors go to stderr as "CODE_NAME: message"; with --json-errors as one JSON
object: {"code":"NOT_FOUND","code_num":5,"message":"...","exit":15}.`

// ExitCodeFor returns the exit status for a call that ended with code.
func ExitCodeFor(code status.Code) int {
	switch {
	case code == status.OK:
		return ExitOK
	case code <= status.Unauthenticated:
		return ExitRPCBase + int(code)
	case code.IsApplication():
		return ExitApplication
	}
	return ExitRPCBase + int(status.Unknown)
}

// cliError is an error with the exit status and status code to report.
type cliError struct {
	exit int
	code status.Code
	msg  string
	err  error // cause, if any
}

func (e *cliError) Error() string { return e.code.String() + ": " + e.msg }
func (e *cliError) Unwrap() error { return e.err }

// usageErrorf reports a usage error (exit 2).
func usageErrorf(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &cliError{exit: ExitUsage, code: status.InvalidArgument, msg: err.Error(), err: errors.Unwrap(err)}
}

// connectError reports a failure to connect (exit 3). An error that is a
// cliError already (from dialTarget) is returned as it is.
func connectError(err error) error {
	var ce *cliError
	if errors.As(err, &ce) {
		return ce
	}
	st := status.FromError(err)
	return &cliError{exit: ExitConnect, code: st.Code(), msg: "cannot connect: " + st.Message(), err: err}
}

// callError reports the status a call ended with (exit 10+code or 30).
func callError(err error) error {
	var ce *cliError
	if errors.As(err, &ce) {
		return ce
	}
	st := status.FromError(err)
	return &cliError{exit: ExitCodeFor(st.Code()), code: st.Code(), msg: st.Message(), err: err}
}

// classify turns any error returned by a command into a cliError.
func classify(err error) *cliError {
	var ce *cliError
	if errors.As(err, &ce) {
		return ce
	}
	var se *status.Error
	if errors.As(err, &se) {
		return callError(se).(*cliError)
	}
	msg := err.Error()
	// cobra's own argument and command errors.
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "accepts ", "requires at least", "requires at most", "invalid argument", "flag needs an argument", "required flag"} {
		if strings.HasPrefix(msg, p) {
			return &cliError{exit: ExitUsage, code: status.InvalidArgument, msg: msg, err: err}
		}
	}
	if errors.Is(err, context.Canceled) {
		return &cliError{exit: ExitCodeFor(status.Canceled), code: status.Canceled, msg: msg, err: err}
	}
	return &cliError{exit: ExitFailure, code: status.Unknown, msg: msg, err: err}
}
