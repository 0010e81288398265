//go:build !unix

package pebble

// allocSlots returns n zeroed words.
func allocSlots(n int) []uint64 { return make([]uint64, n) }

// freeSlots leaves words from allocSlots to the garbage collector.
func freeSlots([]uint64) {}
