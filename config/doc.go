// Package config resolves the configuration of an aster endpoint and
// builds servers and clients from it.
//
// Values come, in order, from built-in defaults, a TOML file (LoadFile;
// its sections are trust, connect, network, storage, health, identity,
// logging and discovery) and ASTER_* environment variables, which always win (Load reads
// only defaults and the environment). A loaded Config remembers
// where every value came from (Source) and prints itself with sources and
// secrets masked (Print, as "aster config print" does). NewLogger gives the
// log/slog logger of the logging.* settings, masking secrets.
//
// Errors are plain Go errors: a bad value is an *Error naming the field,
// its source and the value; a setting whose feature does not exist yet
// wraps ErrNotSupported.
//
// Nothing in this package has side effects until Config.NewServer, the one
// explicit step: it creates the storage directory and logger, builds the
// admission gate of the trust.* settings, and returns a *Server whose
// ListenAndServe also starts the health server of the health.* settings
// (package health) and whose Shutdown stops it. ClientOptions maps the
// settings a client uses to aster.ClientOption values.
//
//	cfg, err := config.LoadFile("aster.toml") // or config.Load()
//	srv, err := cfg.NewServer(aster.WithMiddleware(...))
//	srv.MustRegister(svc)
//	go srv.ListenAndServe("", nil) // network.bind_addr; health server per health.*
//	...
//	srv.Shutdown(ctx) // /readyz answers 503 at once; then the health server stops
//
// The [discovery] settings name where clients find the producers of a
// service and where servers register: DiscoverySource builds the
// discovery.Source of a target ("etcd:///fleet/MissionControl",
// "dns:///_mc._udp.example.internal", "static:///aster1…"), DialFleet dials
// the fleet it names, and NewServer registers the server's services in etcd
// when discovery.backend is "etcd" and discovery.prefix is set.
//
// Admission fails closed: without a root key the server runs in dev mode
// only when no setting asks for admission (see TrustPolicy).
//
// The dependency runs one way: config imports the aster core, never the
// reverse, so importing github.com/aster-go/aster links no configuration
// library.
package config
