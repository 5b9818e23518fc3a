// Package admin is the daemon's admin listener (http_admin, SPEC §11):
// Prometheus metrics at /metrics, the daemon's own health at /healthz, and
// the place where the status page (package admin/statuspage) is mounted at
// / (Handler.Page).
//
// Metrics come from two places. Counters and histograms of operations are
// fed by the ledger: the deployer calls Metrics.Observe for every event it
// writes (deployer.Options.OnEvent), so they count what the ledger
// records, nothing more. Gauges of what is — workers by state, releases on
// disk, the live release — are read from the daemon at scrape time (a
// prometheus.Collector over a Source), so they can never drift from
// `deployer status`. Everything is on a registry of the daemon's own,
// never the global one.
//
// Invariants:
//   - every request is authenticated with a token of http_admin.tokens_file,
//     checked as git's (gitserver.Tokens: SHA-256, constant time, the file
//     re-read on every request), except /metrics and /healthz when
//     http_admin.metrics_public is set; a failed credential is logged and
//     answered after AuthDelay;
//   - an app's counters (both results) and histograms (every phase and
//     operation) exist, at 0, from the moment it is configured (AddApps),
//     so increase() counts its first operation too;
//   - a scrape never waits for an operation: Status and Releases read the
//     apps' published snapshots and the disk, and the disk use of release
//     trees is computed at most once a minute per app.
package admin
