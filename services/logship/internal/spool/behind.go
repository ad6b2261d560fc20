package spool

import (
	"hash"
	"os"
	"sync"
)

// Writes behind the writer.
//
// Run.Write and WriteTail copy the masked bytes into a block and return:
// a goroutine of the run (started when a block is queued, gone when none
// is left) writes the blocks to the log file or the tail segment and
// hashes them into the run's digests, in the order they were written. So
// the writer (the Ship stream's handler, masking chunk after chunk) does
// neither the page cache's copy nor the SHA-256: they run on another core,
// in writes of up to a block instead of one per chunk. After each block
// it starts the block's writeback (sync_file_range on Linux, without
// waiting), so that the commit's fdatasync finds most bytes on the disk
// already and the Ack comes sooner.
//
// Whatever needs the files or the digests as written waits for the blocks
// queued so far (flush): SyncLog (so Commit: the blocks reach the files
// before the fdatasync and the state that covers them), Truncate and
// TruncateTail, the digests (SHA256, StoredSHA256), the tail compaction,
// RemoveTail and Close. Readers read committed bytes only, in the files
// since their commit. A block's write error is kept and returned by the
// next Write or WriteTail to that file and by SyncLog: the commit fails,
// and the run is rolled back (truncated) before it is written again.

const (
	// behindBlock is the size of the blocks written behind.
	behindBlock = 256 << 10
	// behindQueue is the number of blocks a run queues at most; a Write
	// that would queue one more waits (the bytes in memory stay bounded:
	// 1 MiB queued and a block being filled, per run writing that fast).
	// Eight (2 MiB) spared the Ship handler most of its waits for the
	// goroutine behind but did not ship faster (bench/README.md,
	// 2026-12-07 04:56).
	behindQueue = 4
)

// digest is a running SHA-256 of log bytes, written by the goroutine
// behind (h is only touched by it, or once the blocks are flushed).
type digest struct {
	h hash.Hash // nil once it cannot go on (a clone failed)
}

// block is bytes to write at off in one of the run's files, and to hash
// into sum (if not nil). A block with clone set writes nothing: it starts clone.to as
// a copy of clone.from, at that point of the digests.
type block struct {
	f     *os.File
	ferr  *fileErr
	off   int64
	data  []byte
	sum   *digest
	clone *cloneOp
}

type cloneOp struct{ from, to *digest }

// fileErr is the first failed write behind to one file, and where.
type fileErr struct {
	err error
	off int64
}

// behind is a run's writes behind; its fields are guarded by mu. The lock
// order is Run.mu, then behind.mu; the goroutine behind takes only
// behind.mu.
type behind struct {
	mu      sync.Mutex
	cond    *sync.Cond // signalled when a block is done or the goroutine ends
	cur     *block     // being filled, not queued yet
	queue   []*block
	running bool
	queued  uint64     // blocks queued ever
	done    uint64     // blocks written ever
	blocks  *sync.Pool // of *[]byte of cap behindBlock, the spool's: shared by its runs
	logErr  fileErr
	tailErr fileErr
}

func (b *behind) init(blocks *sync.Pool) {
	b.cond = sync.NewCond(&b.mu)
	b.blocks = blocks
}

// write queues p (copied) to be written at off in f and hashed into sum.
// It returns the file's write error seen so far, if any, without queueing.
func (b *behind) write(f *os.File, ferr *fileErr, off int64, p []byte, sum *digest) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ferr.err != nil {
		return ferr.err
	}
	c := b.cur
	if c != nil && (c.f != f || c.off+int64(len(c.data)) != off || c.sum != sum || len(c.data)+len(p) > cap(c.data)) {
		b.queueLocked()
		c = nil
	}
	if c == nil {
		c = &block{f: f, ferr: ferr, off: off, sum: sum, data: b.bufLocked(len(p))}
		b.cur = c
	}
	c.data = append(c.data, p...)
	if len(c.data) == cap(c.data) {
		b.queueLocked()
	}
	return nil
}

// cloneDigest queues the start of to as a copy of from, after the bytes
// queued so far.
func (b *behind) cloneDigest(from, to *digest) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.queueLocked()
	b.enqueueLocked(&block{clone: &cloneOp{from, to}})
}

func (b *behind) bufLocked(n int) []byte {
	if n <= behindBlock {
		if p, ok := b.blocks.Get().(*[]byte); ok {
			return (*p)[:0]
		}
	}
	return make([]byte, 0, max(n, behindBlock))
}

// queueLocked queues the block being filled, if any, once the queue has
// room. It takes the block only then, with no wait between taking and
// queueing it: a flush (the committer's) waiting for room must not hold a
// block while the writer queues later ones, which would then be hashed
// before it.
func (b *behind) queueLocked() {
	for b.cur != nil && len(b.queue) >= behindQueue {
		b.cond.Wait()
	}
	if b.cur == nil {
		return
	}
	c := b.cur
	b.cur = nil
	b.enqueueLocked(c)
}

func (b *behind) enqueueLocked(c *block) {
	b.queue = append(b.queue, c)
	b.queued++
	if !b.running {
		b.running = true
		go b.run()
	}
}

// run writes the queued blocks, in order, until none is left.
func (b *behind) run() {
	b.mu.Lock()
	for len(b.queue) > 0 {
		c := b.queue[0]
		b.mu.Unlock()
		var werr error
		switch {
		case c.clone != nil:
			if c.clone.from.h != nil {
				c.clone.to.h = cloneHash(c.clone.from.h)
			}
		default:
			_, werr = c.f.WriteAt(c.data, c.off)
			if werr == nil {
				startWriteback(c.f, c.off, int64(len(c.data)))
			}
			if c.sum != nil && c.sum.h != nil {
				c.sum.h.Write(c.data)
			}
		}
		b.mu.Lock()
		if werr != nil && c.ferr.err == nil {
			*c.ferr = fileErr{err: werr, off: c.off}
		}
		if cap(c.data) == behindBlock {
			buf := c.data[:0]
			b.blocks.Put(&buf)
		}
		clear(b.queue[:1])
		b.queue = b.queue[1:]
		b.done++
		b.cond.Broadcast()
	}
	b.running = false
	b.cond.Broadcast()
	b.mu.Unlock()
}

// flush waits until every block queued or being filled when it is called
// is written. Writes queued meanwhile are not waited for.
func (b *behind) flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.queueLocked()
	target := b.queued
	for b.done < target {
		b.cond.Wait()
	}
}

// flushed flushes (see flush) and returns the first write error of
// either file, if any.
func (b *behind) flushed() error {
	b.flush()
	return b.err()
}

// clearErr forgets f's write error if it was at or past off: the file is
// cut back to off, so the bytes that failed are gone.
func (b *behind) clearErr(ferr *fileErr, off int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ferr.err != nil && ferr.off >= off {
		*ferr = fileErr{}
	}
}

// err returns the first write error of either file.
func (b *behind) err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.logErr.err != nil {
		return b.logErr.err
	}
	return b.tailErr.err
}
