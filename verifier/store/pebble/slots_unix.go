//go:build unix

package pebble

import (
	"syscall"
	"unsafe"
)

// allocSlots returns n zeroed words mapped outside the Go heap, so a
// mirror of tens of millions of IMSIs neither raises the garbage
// collector's heap goal nor is scanned by it.
func allocSlots(n int) []uint64 {
	b, err := syscall.Mmap(-1, 0, n*8, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		// Out of address space or memory: the same as a failed make.
		panic("pebble: IMSI index in memory: mmap: " + err.Error())
	}
	return unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(b))), n)
}

// freeSlots unmaps words from allocSlots.
func freeSlots(s []uint64) {
	if len(s) == 0 {
		return
	}
	_ = syscall.Munmap(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s)*8))
}
