// Package account is who an app's processes run as: the Unix user (and
// group) an app names with `user:` and `group:`.
//
// A nil *Account means "as the daemon itself"; every method accepts it, so
// callers need no branches. A non-nil Account is only ever made for a
// daemon that can switch to it (root, or a user and group that are already
// the daemon's own, which Lookup turns into nil).
//
// Invariants the daemon relies on:
//   - Credential sets uid, gid and the supplementary groups together: a
//     process never keeps root's groups.
//   - ChownTree gives a tree to the account inside an os.Root of it, with
//     lchown: a symlink, or a directory swapped for one mid-walk, can never
//     lead it outside the tree; nor does a hard link to a file that was
//     not the tree's previous owner's.
//   - Reach tells, before anything starts, whether the account can walk
//     down to a directory, so a bad data_dir mode is a start-up error and
//     not a preflight mystery.
package account
