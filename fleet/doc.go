// Package fleet is how deployer daemons on several hosts see each other:
// the peers a host's config lists (SPEC §10), the endpoint each daemon
// serves them on its git HTTP listener, and the client that asks.
//
// Peers authenticate each other with the fleet's own secret
// (fleet.token_file, the same on every host), sent as a bearer token and
// compared in constant time; a pusher's token is never accepted here, and
// the fleet's is never accepted for a push. Every host is an equal: there
// is no coordinator and no shared database, only what each daemon says of
// itself.
//
// This first part answers "which release is live where": GET
// /_fleet/v1/status on each peer, gathered by the daemon for `deployer
// status --fleet`. A host that does not answer is reported with its error,
// never left out, so a split fleet is always visible.
package fleet
