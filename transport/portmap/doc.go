// Package portmap asks the local NAT gateway to forward a UDP port, so
// that an endpoint behind the NAT can be dialed directly on the gateway's
// external address.
//
// A Mapper is started for one local UDP port (the port a QUIC listener is
// bound to) with New. It finds the gateway — the IPv4 default route's
// gateway from /proc/net/route, or Options.Gateway — and runs attempts in
// its own goroutine:
//
//  1. Probe every enabled protocol concurrently, bounded by
//     Options.ProbeTimeout (default 2 s): PCP (RFC 6887) with an ANNOUNCE
//     request, NAT-PMP (RFC 6886, github.com/jackpal/go-nat-pmp) with an
//     external address request, UPnP IGD (github.com/huin/goupnp) with an
//     SSDP search answered by the gateway, its device description and a
//     GetExternalIPAddress call on its WANIPConnection:2,
//     WANIPConnection:1 or WANPPPConnection:1 service.
//  2. Ask for a mapping of the local port (suggesting the same external
//     port) with the first protocol that answered, in the order PCP,
//     NAT-PMP, UPnP (Options.Protocols); if it refuses, the next one. Each
//     request is bounded by ProbeTimeout, so an attempt takes at most
//     (1 + number of protocols) × ProbeTimeout.
//  3. Renew the mapping with the same protocol when half of its granted
//     lifetime has passed (Options.Lifetime requests 2 h by default; a
//     UPnP lease without expiry is refreshed at the same pace). A renewal
//     that fails drops the mapping (OnChange reports the loss) and maps
//     again; an attempt that fails is retried after RetryInterval,
//     doubling to MaxRetryInterval (30 s to 10 min).
//
// Close stops the goroutine and deletes the mapping, waiting at most
// Options.CloseTimeout (2 s) for the gateway. External and Candidates
// report the mapped address; Options.OnChange is called when it changes;
// Status gives the protocol, gateway, lifetime, counters and last error for
// logs and metrics.
//
// Everything a gateway sends is bounded: PCP answers are read into a
// 1100-byte buffer (the protocol's maximum) and decoded with length checks;
// NAT-PMP answers into go-nat-pmp's 16-byte buffer; SSDP answers into
// MaxSSDPResponse bytes, accepted only from the gateway's address and with
// a LOCATION URL on that address. goupnp's own discovery fetches the
// description with http.DefaultClient and no size limit, so this package
// fetches it itself (MaxDescriptionSize, no redirects, no keep-alive,
// ProbeTimeout) and gives goupnp's SOAP clients an http.Client that caps
// each response at MaxSOAPResponse bytes.
//
// Only IPv4 mappings of UDP ports are made.
package portmap
