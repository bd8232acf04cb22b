// Package testutil holds helpers shared by aster's tests: deterministic
// endpoint keys, goroutine-leak checking and the transport conformance suite
// (TestTransport) that every transport.Transport implementation runs.
//
// Packages that start goroutines should check for leaks in their TestMain:
//
//	func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }
package testutil
