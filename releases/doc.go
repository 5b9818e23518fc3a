// Package releases is the on-disk store of one app's releases (SPEC §6).
//
// Layout under the app directory:
//
//	releases/vN/       the checked-out, built tree of release N
//	releases/vN.json   its metadata, outside the tree so no repository file can forge it
//	current -> releases/vN
//	logs/builds/vN.log
//	history.jsonl      append-only ledger of events
//
// Invariants:
//   - release numbers only grow: a new release is last+1 and its directory is
//     created exclusively, so two releases never share a number;
//   - metadata and the current link change atomically (temp file or link,
//     fsync, rename, fsync of the directory): a crash leaves the old or the
//     new version, never a torn one;
//   - Checkout writes only inside the release directory: every path is
//     checked and every write goes through an os.Root, so neither a ".."
//     component nor a symlink in the tree can redirect a write outside it;
//   - Checkout's cost is bounded before it writes: the tree's blob sizes,
//     read from the object headers, must fit the limit (git.max_release_size)
//     and its entries MaxEntries; blobs are then streamed, never held whole.
//   - Unpack, of a tree Pack made on a peer, is confined and bounded as Checkout.
package releases
