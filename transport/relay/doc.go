// Package relay is aster's relayed QUIC transport: endpoints that cannot
// reach each other over UDP (NAT, firewalls) talk through a relay they can
// both reach over TCP+TLS, and the relay forwards their QUIC packets by
// endpoint id. PROTOCOL.md ("Relayed QUIC") specifies the wire protocol.
//
// The relay never terminates the endpoints' TLS: it forwards opaque,
// encrypted QUIC packets, so it can neither read nor alter calls (QUIC's
// packet protection rejects a modified packet), and both endpoints prove
// their keys to each other in the QUIC handshake exactly as on direct QUIC.
// An endpoint proves possession of its key to the relay when it registers,
// so nobody can receive the traffic of an id whose key they do not hold.
//
// The pieces:
//   - Server is the relay (the "aster relay" command runs one): TLS,
//     registration, forwarding with per-endpoint bandwidth and peer limits,
//     counters, an HTTP handler with /healthz and /metrics, graceful
//     Shutdown.
//   - PacketConn is a net.PacketConn over a relay connection, so that the
//     unchanged QUIC transport (transport/quic) runs over it; it reconnects
//     when the relay connection drops.
//   - PathConn runs under QUIC in place of a PacketConn and moves each
//     relayed connection to a direct UDP path when one works through the
//     endpoints' NATs (PROTOCOL.md §24, "Direct paths"): it learns its
//     public address from the relay (Server.ServeUDP answers on the TLS
//     listener's port number), exchanges candidate addresses with the peer
//     through the relay, and probes them with PINGs signed by the endpoint
//     key; a path is used only after the peer's signed PONG to this side's
//     own PING came back on it. QUIC keeps seeing the peer at its relay
//     address, so a path change never breaks a stream; a direct path that
//     stops answering falls back to the relay. Addr.Path says which path a
//     connection uses.
//   - Listen accepts QUIC connections through a home relay; Dialer dials
//     through the relay named in an address; both run over a PathConn
//     unless Config.Direct.Disable is set. FallbackDialer dials direct
//     addresses first and falls back to the relay (aster.Client uses it by
//     default for addresses that carry a relay).
//
// Relay URLs are "https://host[:port]", optionally pinning a self-signed
// certificate with "#sha256=<hex of the certificate's SHA-256>".
//
// Where only an HTTP proxy lets traffic out, Config.Proxy sends relay
// connections through an HTTP CONNECT proxy ("http://" or, with TLS to the
// proxy, "https://"; Basic proxy authentication from the URL's user and
// password): ProxyURL names one proxy, ProxyFromEnvironment follows
// HTTPS_PROXY and NO_PROXY as net/http does. The proxy sees the relay's
// host and port and the relay's TLS records, which run end to end through
// the tunnel; a refusal fails with a *ProxyError (ErrProxyAuth for 407)
// that shows the proxy URL with its password masked.
package relay
