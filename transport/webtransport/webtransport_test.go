package webtransport_test

import (
	"testing"

	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/transport/webtransport"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

func setup(addr string, cfg *webtransport.Config) func(t *testing.T) testutil.Setup {
	return func(t *testing.T) testutil.Setup {
		ln, err := webtransport.Listen(addr, testutil.Key(t, 1), cfg)
		if err != nil {
			t.Fatal(err)
		}
		d := webtransport.NewDialer(testutil.Key(t, 2), cfg)
		t.Cleanup(func() {
			if err := d.Close(); err != nil {
				t.Errorf("Dialer.Close: %v", err)
			}
		})
		return testutil.Setup{Dialer: d, DialerID: testutil.ID(t, 2), Listener: ln}
	}
}

func TestConformance(t *testing.T) {
	testutil.TestTransport(t, setup("127.0.0.1:0", nil))
}
