// Package testutil holds helpers shared by aster's tests: deterministic
// endpoint keys, goroutine-leak checking, SyncBuffer (a bytes.Buffer for
// concurrent writers) and the transport conformance suite (TestTransport)
// that every transport.Transport implementation runs. Package rig, beside
// it, starts an aster server and its clients for one test.
//
// Packages that start goroutines should check for leaks in their TestMain:
//
//	func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }
package testutil
