package logwatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"syscall"
	"unsafe"
)

// mapWindow is how much of a plain log is mapped at once: the pages a scan holds (they count
// in its resident size until unmapped), and at least a buffer and a page, so every buffer's
// view is one slice of one mapping.
const mapWindow = 4 << 20

// errCannotMap is a file the kernel will not map (a file system without mmap): nothing was
// read, the caller reads it with read() instead.
var errCannotMap = errors.New("cannot map")

// errShrank is a file cut short while mapped: its pages past the new end fault (SIGBUS).
var errShrank = errors.New("the file shrank while being read (truncated or rotated in place)")

// mapping is a read-only window onto a file.
type mapping struct {
	f          *os.File
	size       int64 // the file's size when the scan began: nothing past it is read
	start, end int64 // the file's bytes [start, end) are data
	data       []byte
	mapped     bool // a window was mapped once: from then on a failure is an error
}

// view is up to n of the file's bytes from p (fewer at its end), mapping another window
// when the current one does not hold them.
func (m *mapping) view(p int64, n int) ([]byte, error) {
	want := min(p+int64(n), m.size)
	if p >= want {
		return nil, nil
	}
	if p < m.start || want > m.end {
		if err := m.unmap(); err != nil {
			return nil, err
		}
		start := p &^ int64(os.Getpagesize()-1)
		length := min(int64(mapWindow), m.size-start)
		data, err := syscall.Mmap(int(m.f.Fd()), start, int(length), syscall.PROT_READ, syscall.MAP_SHARED)
		if err != nil && !m.mapped {
			return nil, fmt.Errorf("%w: %w", errCannotMap, err)
		}
		if err != nil {
			return nil, fmt.Errorf("mmap: %w", err)
		}
		m.mapped = true
		_ = syscall.Madvise(data, syscall.MADV_SEQUENTIAL) // a hint: read-ahead, drop behind
		m.data, m.start, m.end = data, start, start+length
	}
	return m.data[p-m.start : want-m.start], nil
}

func (m *mapping) unmap() error {
	if m.data == nil {
		return nil
	}
	err := syscall.Munmap(m.data)
	m.data, m.start, m.end = nil, 0, 0
	return err
}

// scanMapped is scanStream over a plain file from off to its size now, through read-only
// mappings instead of read(): the same lines, events, stats and flushes (each "buffer" is the
// bufSize bytes from a line's start, as scanStream's buffer always starts at one), without
// copying every byte from the page cache first, which was half of a full scan's time.
//
// A file truncated while mapped faults on its lost pages: the fault is turned into a panic for
// this goroutine only (debug.SetPanicOnFault), recovered here when it is in the mapping, and
// returned as errShrank (or as a read fault when the file did not shrink: an I/O error); any
// other panic goes on. A file cut inside the page being read reads as zeros up to the page's
// end, as read() would have returned the bytes before the cut. The size is the file's at the
// start: lines appended during the scan are not read (the audit's window ends at its start
// anyway). Events hold copies (strings), never the mapped bytes.
func scanMapped(ctx context.Context, fh *os.File, off int64, lf *Format, skipPartial bool, st *ScanStats, fn func(Event), flush func() error) (err error) {
	info, err := fh.Stat()
	if err != nil {
		return err
	}
	m := &mapping{f: fh, size: info.Size()}
	defer func() {
		if uerr := m.unmap(); err == nil && uerr != nil {
			err = uerr
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if fault, ok := r.(interface{ Addr() uintptr }); ok && m.data != nil {
			base := uintptr(0)
			if len(m.data) > 0 {
				base = uintptr(unsafe.Pointer(unsafe.SliceData(m.data)))
			}
			if a := fault.Addr(); a >= base && a < base+uintptr(len(m.data)) {
				// A fault in the mapping: the file lost pages we had (shrank), or the
				// kernel could not read them (an I/O error).
				err = errShrank
				if fi, serr := m.f.Stat(); serr != nil || fi.Size() >= m.end {
					err = fmt.Errorf("read fault at offset %d of the mapped file (an I/O error?)", m.start+int64(a-base))
				}
				return
			}
		}
		panic(r)
	}()

	p := off
	discard := skipPartial // skipping to the next line start: a partial line, or a long one
	long := false          // the line skipped is one longer than a buffer (counted)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if discard {
			v, err := m.view(p, bufSize)
			if err != nil {
				return err
			}
			if len(v) == 0 { // the file ends inside the skipped line: not counted
				return doFlush(flush)
			}
			i := bytes.IndexByte(v, '\n')
			if i < 0 {
				p += int64(len(v))
				st.Bytes += int64(len(v))
				continue
			}
			if long {
				st.Lines++
				st.Skipped++
			}
			p += int64(i + 1)
			st.Bytes += int64(i + 1)
			discard, long = false, false
		}
		v, err := m.view(p, bufSize)
		if err != nil {
			return err
		}
		end := bytes.LastIndexByte(v, '\n') + 1
		atEOF := p+int64(len(v)) == m.size
		switch {
		case end == 0 && len(v) == bufSize: // no newline in a whole buffer: skip the line
			discard, long = true, true
			continue
		case atEOF && end < len(v): // a last line without newline still counts
			end = len(v)
			st.Lines++
		}
		scanLines(v[:end], lf, st, fn)
		p += int64(end)
		st.Bytes += int64(end)
		if err := doFlush(flush); err != nil {
			return err
		}
		if atEOF && p == m.size {
			return nil
		}
	}
}

func doFlush(flush func() error) error {
	if flush == nil {
		return nil
	}
	return flush()
}
