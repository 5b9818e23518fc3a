// Package pktline frames git's wire protocol: each pkt-line is four hex
// digits of length (counting themselves) and a payload, and "0000" is a
// flush-pkt that ends a section. The git front door writes the one line it
// adds to git's own answer; the proc-receive hook speaks the protocol both
// ways. Payloads are text: a trailing newline is dropped on reading.
package pktline
