// Package aster is an RPC framework shaped like net/http: a service method is
// a plain [handler.Handler], cross-cutting behaviour is middleware, and the
// bytes move over a swappable [transport] — direct QUIC, QUIC relayed through
// an `aster relay`, WebTransport, or in-memory pipes for tests. Peers are
// identified by ed25519 keys, not host names, and admitted by credentials a
// root key signed offline, not by a certificate authority.
//
// # The model
//
// A [Server] serves services. A service ([handler.Service]) is a name, a
// version and methods; a method is a Handler built from an ordinary Go
// function by one of the typed adapters, one per call pattern:
//
//	svc := handler.NewService("MissionControl", 1)
//	svc.Handle("getStatus", handler.Unary(mc.GetStatus), handler.Requires(trust.Cap("ops.status")))
//	svc.Handle("tailLogs", handler.ServerStream(mc.TailLogs))
//	srv := aster.NewServer(aster.WithSecretKey(key))
//	srv.MustRegister(svc)
//	err := srv.ListenAndServe(":0", func(a aster.Address) { fmt.Println(a) })
//
// A handler reads the call's request metadata, the calling peer and the
// method from its ctx ([handler.IncomingMetadata], [handler.PeerFromContext],
// [handler.MethodFromContext]) and sets response metadata and trailers with
// [handler.SetHeader] and [handler.SetTrailer]. The error it returns becomes
// the call's status ([Errorf], [NewError]; typed details with
// [Error.WithDetails]).
//
// A [Client] calls one endpoint, named by its aster1… [Address] (which
// carries the endpoint's key, so the client verifies whom it reached). The
// generic functions [CallUnary], [CallServerStream], [CallClientStream] and
// [CallBidiStream] give typed calls; [CallDynamic] calls by name with values
// the contract describes, as the aster CLI does:
//
//	c, err := aster.Dial(ctx, addr)
//	st, err := aster.CallUnary[StatusResponse](ctx, c, "MissionControl.getStatus", &StatusRequest{AgentID: "edge-7"})
//
// Every call travels on its own stream of one connection; the client dials
// and admits lazily, fetches the server's contract once, and uses it to
// reject a call with the wrong pattern or message type before anything is
// sent. [ResponseHeader] and [ResponseTrailer] read what the server sent back.
//
// # Lifetimes
//
// A handler's [handler.Stream] and the values read from its ctx belong to
// one call: calls are pooled, so neither may be used after ServeRPC
// returns. On the client, Close of a stream call may be called at any time,
// from any goroutine, also while another goroutine is blocked in Recv or
// Send; it cancels the call, and the blocked Recv or Send returns.
//
// # Middleware
//
// Server middleware is a func(handler.Handler) handler.Handler ([WithMiddleware]),
// client middleware wraps a [Caller] the way an http.RoundTripper wrapper
// does ([WithClientMiddleware]). The package middleware holds the standard
// ones (deadlines, retries, circuit breaking, rate limits, recovery,
// logging/audit, capabilities) and package otel the tracing and metrics.
//
// # Sessions
//
// A session-scoped service ([handler.NewSessionService]) gets a fresh
// instance per client [Session]; every call of a session has its own stream
// but is pinned to the connection that holds the session: when that
// connection is gone the session's calls fail with UNAVAILABLE and nothing
// redials.
//
// # Fleets
//
// A [Fleet] calls a service, not an endpoint: it follows the producers a
// [discovery.Source] lists under a name (etcd, DNS SRV/TXT, or a static
// list), keeps a connection per producer warm, and sends each call to a
// ready producer picked by power of two choices on outstanding calls
// ([WithBalancer] for round robin). Producers that fail are ejected and
// probed back ([WithOutlierDetection]); one that answers "server shutting
// down" takes no new calls at once. Idempotent calls that fail with
// UNAVAILABLE are retried on another producer by the Fleet's default
// [middleware.Retry] ([WithFleetRetry]); session calls stay on the producer
// that holds the session ([Fleet.NewSession]). A server announces itself
// with [WithRegistry], deregistering before it drains on Shutdown, and
// publishes its producer credential ([WithCredential]); a client that
// trusts only enrolled producers says so with [WithProducerRoot]. The
// registry says where to look; the key in each entry says whom to trust,
// and the transport verifies it on every connection.
//
//	f, err := aster.DialFleet(ctx, src, "fleet/MissionControl", aster.WithProducerRoot(root))
//	st, err := aster.CallUnary[StatusResponse](ctx, f, "MissionControl.getStatus", req)
//
// # Options
//
// [NewServer] and [NewClient] take options. Options that mean the same on
// both sides ([WithSecretKey], [WithCodec], [WithMaxFrameSize],
// [WithQUICConfig], [WithLogger], [WithIPTransports]) are [Option] values
// usable with either; the rest are [ServerOption] or [ClientOption]. Every
// option documents its default, and a bad value fails the first use with
// INVALID_ARGUMENT naming the option.
//
// # What this package links
//
// The core imports no configuration, HTTP or exporter library: configuration
// (TOML and ASTER_* variables) lives in package config, the health and
// metrics HTTP server in package health, OTLP export in otel/otelexport, and
// the WebTransport transport is used by passing its dialer
// ([WithDialerFor]). The wire protocol is specified in PROTOCOL.md.
package aster
