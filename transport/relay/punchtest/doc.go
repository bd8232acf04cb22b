// Package punchtest holds the network test of transport/relay's direct
// paths (build tag "netns", run as root by .ci/run): a relay on a "public"
// network and two endpoints, each behind its own NAT router (iptables
// masquerade) in network namespaces, each side a separate process. It has
// no code of its own; the test re-executes its binary in each namespace.
package punchtest
