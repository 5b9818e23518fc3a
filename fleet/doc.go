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
//
// Shipping moves a release's files to a peer (Client.Upload, received by a
// Staging): a release's tar (PartTree) and its git bundle (PartBundle),
// each described by its size and sha256 (Describe) before it leaves. A
// part is sent with PUT IncomingPath?offset=N, streamed from disk, into
// the peer's staging directory for a shipment id the sender chose; the
// peer appends only at the size it holds, so an upload cut by a broken
// connection or a restarting peer asks how much arrived (GET) and sends
// the rest, instead of starting over. Nothing staged is trusted until
// Staging.Open has checked the whole file against its description: a
// short, long or altered part is ErrChecksum, never a release. Shipments
// a sender left behind are swept by age.
package fleet
