// Package relay is the output relay of a run container (ADR 0016): a small
// process, the container's entrypoint and its init (PID 1), that runs the
// phase's command with its output on a pipe, and hands what it prints
// to the executor over a unix socket the executor listens on and bind-mounts
// into the container. It keeps every byte until the executor says it is stored
// durably, so the executor may die and come back (a new process, the same
// socket path) without a byte lost or sent twice: on reconnecting the
// executor names the offset to resend from. When its buffer is full it stops
// reading the pipes: the command blocks on a full pipe; nothing is dropped.
// Output never touches a disk: pipes, memory and a socket.
//
// By default the command's stdout and stderr are the same pipe, as on a
// terminal (ADR 0020): one channel keeps the exact order of the writes of
// both, and everything is relayed as KindStdout. With SeparateStderr they
// are two pipes, relayed as KindStdout and KindStderr; the order across the
// two is then only the order the relay read them in (ADR 0016).
//
// This package holds the relay side and the wire format; it uses only the
// standard library without package net, so that the relay binary is static
// and runs in any image.
//
// Wire format (all integers big-endian). The relay connects and sends a hello:
// the magic "HRL1", then u64 produced (bytes read from the command so far)
// and u64 kept (offset of the oldest byte still buffered). The executor answers
// with u64 from, the offset to resend from (kept <= from <= produced). Then the
// relay sends frames — u8 kind, u32 length, payload: KindStdout and
// KindStderr carry output (offsets count the payload bytes of both kinds
// together, in the order the relay read them), KindExit carries i32 exit code
// and i32 signal once the command has exited and its pipes are closed. The
// executor sends u64 acknowledgements: every byte below is durable; the value
// Done acknowledges the exit frame, after which the relay exits with the
// command's code.
package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Frame kinds.
const (
	KindStdout byte = 1
	KindStderr byte = 2
	KindExit   byte = 3
)

// Magic starts the relay's hello.
const Magic = "HRL1"

// Done is the acknowledgement of the exit frame.
const Done = math.MaxUint64

// HelloSize is the size of the relay's hello.
const HelloSize = 4 + 8 + 8

// MaxFrame is the largest payload of an output frame.
const MaxFrame = 64 << 10

// DefaultBuffer is how much unacknowledged output the relay keeps.
const DefaultBuffer = 4 << 20

// mark says that output from offset at on is of kind (until the next mark).
type mark struct {
	at   uint64
	kind byte
}

// Shim is the relay side. Zero values of the tunables take the defaults.
type Shim struct {
	// Socket is the executor's socket path.
	Socket string
	// Buffer bounds the unacknowledged output kept (DefaultBuffer).
	Buffer int
	// OutputWait bounds the wait for the pipes to close after the command
	// exited (a process it left behind may hold them); 2 s by default.
	OutputWait time.Duration
	// Log receives the relay's own diagnostics (never output); nil: stderr.
	Log io.Writer
	// SeparateStderr gives the command's stderr a pipe of its own, relayed
	// as KindStderr. By default stdout and stderr share one pipe (one
	// channel, in write order, like a terminal), relayed as KindStdout.
	SeparateStderr bool
	// Init makes the relay its container's init, as docker-init (tini)
	// would be: it reaps every process that ends under it, not only the
	// command (as PID 1, or else as a child subreaper), so that nothing the
	// command leaves behind stays a zombie. Only for a relay that is a
	// process of its own: it waits for any child of the process.
	Init bool

	mu   sync.Mutex
	cond *sync.Cond
	// ring holds the output kept, [kept, produced): offset o is at
	// ring[o%len(ring)]. It is allocated with the first output, Buffer
	// bytes, and read into directly from the pipes.
	ring []byte
	// marks are where the kind of output changes, the first at or below
	// kept (one mark with a single pipe).
	marks    []mark
	kept     uint64 // acknowledged below
	produced uint64
	// writing: a session is writing the frame from offset writeFrom;
	// the pump does not reuse it before the write returned, even if it is
	// acknowledged meanwhile (the race detector sees a write's buffer read
	// when the write returns).
	writing   bool
	writeFrom uint64
	exited    bool
	code      int32
	signal    int32
	done      bool
}

// Run starts argv with its output on pipes, relays it, and returns the
// command's exit code (128+signal when killed by a signal) once the executor
// has acknowledged all of it. It returns 127 with a message on the relay's
// stderr when the command cannot start. Termination signals the relay gets are
// passed on to the command's process group.
func (s *Shim) Run(argv []string) int {
	if s.Buffer <= 0 {
		s.Buffer = DefaultBuffer
	}
	if s.OutputWait <= 0 {
		s.OutputWait = 2 * time.Second
	}
	if s.Log == nil {
		s.Log = os.Stderr
	}
	s.cond = sync.NewCond(&s.mu)
	if len(argv) == 0 {
		fmt.Fprintln(s.Log, "hangar-relay: no command")
		return 127
	}
	outR, outW, err := outputPipe()
	if err != nil {
		fmt.Fprintln(s.Log, "hangar-relay: pipe:", err)
		return 127
	}
	// One pipe for fd 1 and fd 2 unless told otherwise: only one channel
	// keeps the order in which the command wrote to the two.
	readers, kinds := []int{outR}, []byte{KindStdout}
	errW := outW
	if s.SeparateStderr {
		var errR int
		errR, errW, err = outputPipe()
		if err != nil {
			_ = syscall.Close(outR)
			_ = outW.Close()
			fmt.Fprintln(s.Log, "hangar-relay: pipe:", err)
			return 127
		}
		readers, kinds = append(readers, errR), append(kinds, KindStderr)
	}
	closeWriters := func() {
		_ = outW.Close()
		if errW != outW {
			_ = errW.Close()
		}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, outW, errW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT)
	if s.Init {
		if err := becomeReaper(); err != nil {
			fmt.Fprintln(s.Log, "hangar-relay: cannot reap orphans:", err)
		}
	}
	if err := cmd.Start(); err != nil {
		closeWriters()
		for _, r := range readers {
			_ = syscall.Close(r)
		}
		// Said in the run's log, as its only output.
		msg := fmt.Sprintf("hangar-relay: cannot start %s: %v\n", argv[0], err)
		s.mu.Lock()
		s.ring = []byte(msg)
		s.marks = []mark{{0, kinds[len(kinds)-1]}}
		s.produced = uint64(len(msg))
		s.exited, s.code = true, 127
		s.mu.Unlock()
		s.connectLoop()
		return 127
	}
	closeWriters()
	pgid := cmd.Process.Pid
	wait := func() (int, int) { return exitStatus(cmd, cmd.Wait()) }
	if s.Init {
		// The reaper, not cmd.Wait, collects the command's status: the
		// two would race for it.
		reaped := reapAll(pgid)
		wait = func() (int, int) { return statusCode(<-reaped) }
	}
	go func() {
		for sig := range sigs {
			_ = syscall.Kill(-pgid, sig.(syscall.Signal))
		}
	}()

	pumped := make(chan struct{})
	var abandon atomic.Bool
	go func() { defer close(pumped); s.pump(readers, kinds, &abandon) }()
	go s.connectLoop()

	code, sig := wait()
	select {
	case <-pumped:
	case <-time.After(s.OutputWait):
		// A process the command left behind holds the pipes: stop reading.
		abandon.Store(true)
		<-pumped
	}
	for _, r := range readers {
		_ = syscall.Close(r)
	}
	s.mu.Lock()
	s.exited, s.code, s.signal = true, int32(code), int32(sig)
	s.cond.Broadcast()
	for !s.done {
		s.cond.Wait()
	}
	s.mu.Unlock()
	return code
}

func exitStatus(cmd *exec.Cmd, err error) (int, int) {
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return 127, 0
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
		return statusCode(ws)
	}
	return cmd.ProcessState.ExitCode(), 0
}

// pipeSize is what the relay asks of its pipes (F_SETPIPE_SZ): fewer,
// larger reads, and fewer wake-ups of a command printing fast, than with the
// 64 KiB default. Linux allows unprivileged processes up to 1 MiB
// (fs.pipe-max-size); a refusal keeps the default.
const pipeSize = 1 << 20

// outputPipe returns a pipe for the command's output: the read end, a raw
// non-blocking descriptor the pump reads (not an *os.File: Go's poller would
// register it with its epoll, and every write of the command would then wake
// one of the relay's threads for nothing), and the write end for the
// command, blocking. Both are close-on-exec in the relay; the command gets
// the write end as its fd 1 (and 2).
func outputPipe() (int, *os.File, error) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		return -1, nil, err
	}
	if err := syscall.SetNonblock(p[0], true); err != nil {
		_ = syscall.Close(p[0])
		_ = syscall.Close(p[1])
		return -1, nil, err
	}
	_, _, _ = syscall.Syscall(syscall.SYS_FCNTL, uintptr(p[0]), syscall.F_SETPIPE_SZ, pipeSize)
	return p[0], os.NewFile(uintptr(p[1]), "|1"), nil
}

// pipeCapacity is the size of the pipe fd is an end of (F_GETPIPE_SZ).
func pipeCapacity(fd int) int {
	n, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETPIPE_SZ, 0)
	if errno != 0 {
		return 64 << 10
	}
	return int(n)
}

// gather bounds how long the pump lets output gather in the pipe before it
// reads it, when output is flowing fast (see nextWait).
const gather = time.Millisecond

// A cycle is one wait of the pump and the reads until the pipes are empty.
type cycle struct {
	slept    time.Duration // 0: it waited for a pipe to become readable (select)
	since    time.Duration // select: time since the previous select woke up
	got      int           // bytes read in the cycle
	single   bool          // only one pipe is open
	capacity int           // the pipe's size
}

// nextWait is how long the pump sleeps before it reads the pipe again after
// cycle c, instead of waiting for it to become readable (0: it waits, select).
// Each write to a pipe the pump waits on wakes the pump: a command printing
// 4 KiB at a time (busybox) pays a wake-up of the relay for every write,
// and the relay a wake-up, a select and two reads. So when output flows
// fast, the pump lets it gather in the pipe: when a select woke it less than
// gather after the previous one did, and after a sleep that found output,
// it sleeps, at most gather, and then reads what gathered. The sleep is cut
// so that what is expected to gather (at the rate of the last cycle) stays
// under a quarter of the pipe: the command never blocks on a full pipe for
// it. A sleep that found nothing ends the gathering: the next output wakes
// the pump at once. So a line printed alone is read as soon as it is
// written, and output is never held back more than gather. Only with one
// pipe open: with two, what is read at once from both loses the order in
// which the two were written.
func nextWait(c cycle) time.Duration {
	if !c.single || c.got == 0 {
		return 0
	}
	if c.slept == 0 && c.since >= gather {
		return 0
	}
	d := gather
	if c.slept > 0 {
		// At the last cycle's rate, a quarter of the pipe fills in
		// slept*quarter/got.
		quarter := c.capacity / 4
		if c.got > quarter {
			d = max(time.Duration(int64(c.slept)*int64(quarter)/int64(c.got)), 0)
		}
	}
	return min(d, gather)
}

// pump reads the command's output pipes (one, or stdout's and stderr's)
// from one goroutine, straight into the ring, waiting while it is full.
// Reads do not block: a pipe is read until it is empty, and only then does
// the pump wait (select, or a sleep while output flows fast: nextWait) for
// one to become readable. With one pipe the order is the order of the
// writes. With two, one reader for both keeps the order across the two
// streams as close as the kernel lets it be seen: two readers would let the
// scheduler reorder them.
func (s *Shim) pump(fds []int, kinds []byte, abandon *atomic.Bool) {
	n := len(fds)
	open := make([]bool, n)
	ready := make([]bool, n) // not known to be empty
	partial := make([]bool, n)
	for i := range fds {
		open[i], ready[i] = true, true
	}
	capacity := pipeCapacity(fds[0])
	anyOpen := func() bool { return slices.Contains(open, true) }
	anyReady := func() bool {
		for i := range fds {
			if open[i] && ready[i] {
				return true
			}
		}
		return false
	}
	// The first cycle reads what the command printed before the pump
	// started: as after an idle wait.
	c := cycle{since: gather}
	var lastWake time.Time
	for anyOpen() && !abandon.Load() {
		if !anyReady() {
			// The pipes are empty: the cycle is over.
			c.single = n == 1 || open[0] != open[1]
			c.capacity = capacity
			if d := nextWait(c); d > 0 {
				sleep(d)
				c = cycle{slept: d}
				for i := range fds {
					ready[i] = open[i]
				}
			} else {
				if !s.waitReadable(fds, open, ready) {
					continue
				}
				now := time.Now()
				c = cycle{since: now.Sub(lastWake)}
				lastWake = now
			}
		}
		// When both are ready their order is unknown: a stream whose last
		// read ended inside a line goes first (a line is finished before
		// the other stream's output), else stderr (a shell traces a
		// command on stderr before the command prints).
		order := []int{0}
		if n == 2 {
			order = []int{1, 0}
			if partial[0] && !partial[1] {
				order = []int{0, 1}
			}
		}
		for _, i := range order {
			if !open[i] || !ready[i] {
				continue
			}
			room := s.room()
			got, err := syscall.Read(fds[i], room)
			switch {
			case got > 0:
				s.produce(kinds[i], got)
				partial[i] = room[got-1] != '\n'
				c.got += got
			case err == syscall.EAGAIN:
				ready[i] = false
			case err == syscall.EINTR:
			default: // end of file, or an error
				open[i] = false
			}
		}
	}
}

// sleep blocks the pump's thread for d (no Go timer: nothing else of the
// relay's runs meanwhile, and the thread sleeps exactly as long).
func sleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
	}
}

// waitReadable returns at once if an open pipe may hold output; else it
// waits up to 100 ms for one to become readable and marks which are.
func (s *Shim) waitReadable(fds []int, open, ready []bool) bool {
	var set syscall.FdSet
	top := 0
	for i, fd := range fds {
		if open[i] && ready[i] {
			return true
		}
		if open[i] {
			set.Bits[fd/64] |= 1 << (uint(fd) % 64)
			top = max(top, fd)
		}
	}
	tv := syscall.Timeval{Usec: 100_000}
	if _, err := syscall.Select(top+1, &set, nil, nil, &tv); err != nil {
		return false // EINTR; another error ends with the pipes
	}
	any := false
	for i, fd := range fds {
		if open[i] && set.Bits[fd/64]&(1<<(uint(fd)%64)) != 0 {
			ready[i], any = true, true
		}
	}
	return any
}

// room waits until the ring has room and returns the free part of it that
// starts at produced and does not wrap. The pump reads into it without the
// lock: no one else touches that part until produce publishes it.
func (s *Shim) room() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ring == nil {
		s.ring = make([]byte, s.Buffer)
	}
	size := uint64(len(s.ring))
	low := func() uint64 {
		if s.writing {
			return min(s.kept, s.writeFrom)
		}
		return s.kept
	}
	for s.produced-low() >= size {
		s.cond.Wait()
	}
	at := s.produced % size
	free := size - (s.produced - low())
	return s.ring[at : at+min(free, size-at)]
}

// produce publishes n bytes of kind read into the ring at produced.
func (s *Shim) produce(kind byte, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if last := len(s.marks) - 1; last < 0 || s.marks[last].kind != kind {
		s.marks = append(s.marks, mark{s.produced, kind})
	}
	s.produced += uint64(n)
	s.cond.Broadcast()
}

// connectLoop connects to the executor, again whenever the connection breaks,
// until the exit frame is acknowledged.
func (s *Shim) connectLoop() {
	backoff := 20 * time.Millisecond
	for {
		s.mu.Lock()
		done := s.done
		s.mu.Unlock()
		if done {
			return
		}
		fd, err := dialUnix(s.Socket)
		if err == nil {
			backoff = 20 * time.Millisecond
			c := os.NewFile(uintptr(fd), "relay")
			s.session(c)
			_ = c.Close()
			continue
		}
		time.Sleep(backoff)
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}

// dialUnix connects a unix stream socket to path, without package net.
func dialUnix(path string) (int, error) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := syscall.Connect(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		_ = syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}

// session serves one connection until it breaks or the exit is acknowledged.
func (s *Shim) session(c *os.File) {
	s.mu.Lock()
	hello := make([]byte, 0, HelloSize)
	hello = append(hello, Magic...)
	hello = binary.BigEndian.AppendUint64(hello, s.produced)
	hello = binary.BigEndian.AppendUint64(hello, s.kept)
	s.mu.Unlock()
	if _, err := c.Write(hello); err != nil {
		return
	}
	var b [8]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return
	}
	from := binary.BigEndian.Uint64(b[:])
	s.mu.Lock()
	if from < s.kept || from > s.produced {
		s.mu.Unlock()
		fmt.Fprintf(s.Log, "hangar-relay: the executor asked for offset %d, outside [%d, %d]\n", from, s.kept, s.produced)
		return
	}
	s.mu.Unlock()

	broken := make(chan struct{})
	var once sync.Once
	brk := func() {
		once.Do(func() {
			close(broken)
			_ = c.Close()
			s.mu.Lock()
			s.cond.Broadcast()
			s.mu.Unlock()
		})
	}
	go func() { // acknowledgements
		var a [8]byte
		for {
			if _, err := io.ReadFull(c, a[:]); err != nil {
				brk()
				return
			}
			s.ack(binary.BigEndian.Uint64(a[:]))
		}
	}()
	sent := from
	exitSent := false
	hdr := make([]byte, 5)
	for {
		s.mu.Lock()
		for sent == s.produced && (!s.exited || exitSent) && !s.done && !isClosed(broken) {
			s.cond.Wait()
		}
		if s.done || isClosed(broken) {
			s.mu.Unlock()
			return
		}
		var kind byte
		var data []byte
		if sent < s.produced {
			kind, data = s.frameLocked(sent)
			s.writing, s.writeFrom = true, sent
		} else {
			kind = KindExit
			data = binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, uint32(s.code)), uint32(s.signal))
		}
		s.mu.Unlock()
		hdr[0] = kind
		binary.BigEndian.PutUint32(hdr[1:], uint32(len(data)))
		// data is not changed while it is sent: the pump writes only
		// past produced, into what is acknowledged (an acknowledgement
		// never covers what was not sent), and not into the frame being
		// written (writing).
		_, err := c.Write(hdr)
		if err == nil {
			_, err = c.Write(data)
		}
		s.mu.Lock()
		s.writing = false
		s.cond.Broadcast()
		s.mu.Unlock()
		if err != nil {
			brk()
			return
		}
		if kind == KindExit {
			exitSent = true
		} else {
			sent += uint64(len(data))
		}
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// frameLocked returns the next frame's kind and payload from offset off
// (kept <= off < produced): at most MaxFrame bytes of one kind that do not
// wrap around the ring.
func (s *Shim) frameLocked(off uint64) (byte, []byte) {
	// The last mark at or below off (marks[0] is).
	i := sort.Search(len(s.marks), func(j int) bool { return s.marks[j].at > off }) - 1
	end := min(s.produced, off+MaxFrame)
	if i+1 < len(s.marks) {
		end = min(end, s.marks[i+1].at)
	}
	size := uint64(len(s.ring))
	at := off % size
	end = min(end, off+size-at)
	return s.marks[i].kind, s.ring[at : at+end-off]
}

// ack drops what is acknowledged.
func (s *Shim) ack(through uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if through == Done {
		if s.exited {
			s.done = true
		}
		s.cond.Broadcast()
		return
	}
	through = min(through, s.produced)
	if through <= s.kept {
		return
	}
	s.kept = through
	for len(s.marks) > 1 && s.marks[1].at <= through {
		s.marks = s.marks[1:]
	}
	s.cond.Broadcast()
}
