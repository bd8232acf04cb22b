// Command etcd runs a single-node etcd server for aster's tests (see
// internal/testutil/etcdtest). It is a separate module so that the main
// module never depends on etcd's server.
//
//	etcd -data-dir DIR -client-url http://127.0.0.1:PORT -peer-url http://127.0.0.1:PORT
//
// With -cert-file and -key-file it serves clients over TLS (the client URL
// is then https://...); with -client-ca-file too it requires client
// certificates signed by that CA (mutual TLS).
//
// It prints "etcd ready <client URL>" on stdout once it serves clients and
// exits cleanly (status 0) on SIGTERM or SIGINT.
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	dataDir := flag.String("data-dir", "", "data directory (required; reused across restarts)")
	clientURL := flag.String("client-url", "http://127.0.0.1:2379", "URL to serve clients on")
	peerURL := flag.String("peer-url", "http://127.0.0.1:2380", "URL to serve peers on")
	logLevel := flag.String("log-level", "warn", "log level: debug, info, warn, error")
	var tlsInfo transport.TLSInfo
	flag.StringVar(&tlsInfo.CertFile, "cert-file", "", "server certificate for clients (PEM); with -key-file: serve clients over TLS")
	flag.StringVar(&tlsInfo.KeyFile, "key-file", "", "key of -cert-file (PEM)")
	flag.StringVar(&tlsInfo.TrustedCAFile, "client-ca-file", "", "CA of the client certificates clients must present (PEM); unset: none required")
	flag.Parse()
	tlsInfo.ClientCertAuth = tlsInfo.TrustedCAFile != ""
	if err := run(*dataDir, *clientURL, *peerURL, *logLevel, tlsInfo); err != nil {
		fmt.Fprintln(os.Stderr, "etcd:", err)
		os.Exit(1)
	}
}

func run(dataDir, clientURL, peerURL, logLevel string, tlsInfo transport.TLSInfo) error {
	if dataDir == "" {
		return fmt.Errorf("-data-dir is required")
	}
	cu, err := url.Parse(clientURL)
	if err != nil {
		return fmt.Errorf("-client-url: %w", err)
	}
	pu, err := url.Parse(peerURL)
	if err != nil {
		return fmt.Errorf("-peer-url: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Name = "aster-test"
	cfg.Dir = dataDir
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ClientTLSInfo = tlsInfo
	cfg.LogLevel = logLevel
	// Tests do not need durability across power loss; fsync is slow.
	cfg.UnsafeNoFsync = true

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return err
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		return fmt.Errorf("not ready after 60 s")
	case <-sigs:
		return nil
	}
	fmt.Printf("etcd ready %s\n", cu)
	select {
	case err := <-e.Err():
		return err
	case <-sigs:
		return nil
	}
}
