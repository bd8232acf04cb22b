package quic

// SetAttemptHook sets the hook Dial calls as each attempt starts (nil
// removes it). Tests that set it must not run in parallel.
func SetAttemptHook(h func(i, running int)) { testHookAttempt = h }
