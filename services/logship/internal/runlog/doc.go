// Package runlog is the life of a run's log inside logship: masking the
// chunks an executor ships, committing them to the spool, acknowledging
// them, uploading the masked log to S3, and serving it to readers.
//
// The files follow its jobs: runlog.go the Manager (options, loading the
// spool, stopping); run.go a run's Open and Write; streams.go the
// per-stream maskers; merge.go the merged log and its last pass; commit.go
// clean points and commits; stdout.go the standard output bookkeeping
// (lines.go writes the lines); close.go closing; idle.go closing runs
// whose executor did not come back; diskguard.go the spool's free space;
// upload.go the S3 uploads (live chunks, the final object's parts);
// reader.go Tail's reader.
//
// # The path of a chunk
//
//	chunk ─► its stream's masker ─► merger (lines) ─► last pass ─► spool
//
// A run has one mask.Writer per stream (stdout, stderr, system, and one
// for chunks of no stream), all on the run's mask.Set. Each keeps its
// automaton state across the chunks of its stream, so a secret that is
// contiguous within one stream is masked however it is cut into chunks
// and whatever the other streams print in between (a shell's "+ cmd"
// trace on stderr between two writes of stdout, say).
//
// The maskers' output is merged in arrival order (the executor's
// sequence, one order across all streams) a line at a time: when bytes of
// one stream come while the merged log's last line is open and belongs to
// another stream, that line is ended with a newline first. So a line of
// the log never holds bytes of two streams, a partial line (a prompt)
// appears at once, and the only bytes the log holds that the job did not
// print are those line breaks. A last masker runs over the merged log, on
// the same set: a secret, or an encoding of one, that only forms once the
// streams are put together (a multi-line value whose lines went to two
// streams) is masked there, before anything is stored or shown. So no
// value of the set appears contiguous in the spool, hence in the live
// chunks, the final object, Tail and standard output.
//
// The streams' maskers are skipped where they cannot matter (ADR 0021,
// direct.go): from a clean point, chunks of one stream go into the merge
// unmasked and the last pass alone masks them, which stores the same
// bytes; a chunk of another stream before the next clean point rolls the
// run back to that clean point and masks those chunks again through their
// stream's masker. A run on one stream is thus scanned once.
//
// A chunk of the system stream (the executor's own lines: phase headers,
// the closing footer) is a boundary of the job's output: the other
// streams' maskers are flushed before it, so what they held back comes
// before it, and the "[hangar] ... finished" footer is the log's last
// line. (A secret printed in two parts on either side of a phase boundary
// is not masked; each part is shown.)
//
// Ordering guarantee: the bytes of each stream appear exactly once, in
// order; across streams, bytes appear in arrival order, except the bytes a
// masker holds back because they could begin a secret (at most the
// longest pattern's length minus one, per masker): those come out with a
// later chunk of their stream, after the output of other streams that
// arrived meanwhile, on a line of their own. Nothing is held back on a
// timer. Example, "hunter2" being a secret: stdout "a hunte", then stderr
// "x\n", then stdout "r2 b\n" are stored as "a \nx\n****** b\n".
//
// A masker that holds bytes back while its stream stays silent would block
// acknowledgements (below) for ever while the other streams go on, and
// with them the executor, whose unacknowledged window is bounded. So once
// a run received idleFlushBytes (1 MiB) since the last chunk of a stream
// whose masker holds bytes back, that masker is flushed (its held bytes
// written, its automaton reset): a secret whose parts, in one stream, are
// more than a MiB of other streams' output apart is not masked by its
// stream's masker (the last pass still masks it if the parts end up
// contiguous). Close flushes the streams' maskers in the order of their
// last chunks, then the last pass.
//
// # Acknowledgements and the maskers
//
// The bytes a masker holds back exist only in memory. Writing them to
// disk raw would put secret material on disk, so logship never does.
// Instead it acknowledges a chunk only at a clean point: when, after the
// chunk, no masker (the streams' and the last pass) holds anything back,
// every byte of every chunk up to it has been masked into the spool, and
// every masker's state is that of a fresh masker. Session.Write masks a
// chunk into the spool (not durably) and notes whether it ends at a clean
// point, with the spool's sizes and the merger's open line there.
// Session.Commit commits through the last clean point noted: it fsyncs
// the spool, records (sequence, masked byte offset, open line) in the
// run's state file, and only then may Ack{through_sequence} be sent. The
// Ship handler commits in groups (see package ship: a chunk is committed
// at once when no commit runs, the chunks that arrive during a commit go
// into the next one); a commit holds only a per-run commit lock during its
// fsyncs, so Write goes on meanwhile. Bytes written after the clean point
// a commit records are fsynced with it but not recorded: they count as
// not written.
//
// So a run's stages overlap: the Ship stream receives the next chunks
// while Write masks one; the spool writes the masked bytes to its files
// and hashes them (the stored log's SHA-256) on a goroutine of its own,
// behind Write (package spool: up to 1 MiB queued per run before Write
// waits for it); a commit waits for those writes, then fsyncs, while Write
// goes on. A sender that waits on its full unacknowledged window mostly
// waits for the masking (the handler), not for the fsyncs: a commit takes a
// few milliseconds, and a window eight times larger sent no faster in
// BenchmarkShip (ADR 0023). Only the masking of one run's chunks is
// sequential, as it must be (one automaton state per masker).
//
// Whenever a Ship stream (re)opens a run, in the same process or after a
// restart, logship truncates the spool back to the recorded offsets,
// starts fresh maskers and the merger at the recorded open line, and
// answers Opened with next_sequence one past the recorded sequence; the
// executor resends from there. The log loses nothing and duplicates
// nothing, whatever the chunking and interleaving.
//
// Whether a masker is clean is its own signal (mask.Writer.Clean: it holds
// nothing back and is as a new writer), read after each write; no chunk is
// kept in memory for it. When chunk boundaries fall inside possible
// secrets for a long stretch (an adversarial stream),
// acknowledgements wait; the executor's bounded unacknowledged window then
// slows it down, and Close acknowledges all.
//
// Readers (Tail, the uploader) see only the committed bytes, so a rollback
// never takes back a byte anyone has seen.
//
// # What the user is told
//
// The first lines of a run's log name (never show) the secrets shorter
// than the minimum length, which are not masked, and the secrets some of
// whose encodings are too short to be masked, with those encodings'
// classes (mask.Report):
//
//	[hangar] not masked in this log (shorter than 6 bytes): PIN, #3
//	[hangar] encodings not masked in this log (shorter than 6 bytes): KEY (line by line)
//
// (a secret without a name is named by its position).
//
// # Limits
//
// An Open whose secret values total more than MaxSecretBytes is refused
// (ErrSecretsTooLarge) before any masker is built; the gateway refuses
// such a run at intake already.
//
// A run's stored log is at most Options.MaxLogBytes (HANGAR_LOG_MAX_BYTES)
// plus one notice line: its head and its tail. The limit is fixed in the
// run's state when the run is first opened. The last pass writes into a
// sink that fills the spool's log file up to the head limit (the first
// half of the limit), then appends to the spool's tail segment, of which
// the last tail limit bytes (the other half) are kept; see package spool
// for how the tail segment rolls back to the last commit and stays
// bounded. A commit records both sizes (MaskedBytes, TailBytes) with
// acked_sequence, so acknowledgements, next_sequence and the rollback at
// reopen work on the head and the tail alike. The run goes on whatever
// its size: chunks are still acknowledged.
//
// At Close the stored log is: the head, then, if bytes were cut, a newline
// and the line
//
//	[hangar] log truncated: <n> bytes cut from the middle (limit <limit> bytes)
//
// then the kept tail. The kept tail is not copied: it is read in place
// from the tail segment, already durable, and the notice is recorded in
// the closed state (spool.State.StoredHead, Notice). Closed.Bytes, Closed.SHA256 and the final object's
// metadata describe exactly that; a log within the limit is stored whole,
// without the notice. Live chunk objects and Tail follow the log file's
// committed bytes: they show the head live; the rest (the notice and the
// kept tail) appears when the log is closed.
//
// # Standard output
//
// With Options.Stdout set (HANGAR_RUN_LOGS_ON_STANDARD_OUTPUT), each line
// of a run's masked log (all of it: the limit applies to the stored log
// only) is also written there as one JSON object (see lines.go). A line's
// stream is that of its bytes (lines never mix streams; none if the last
// pass put several streams' bytes out together, or masked across them),
// its time that of the chunk whose Write released its first byte. Only
// committed masked bytes are written, right after their commit, so in
// order: bytes written after the last commit (not acknowledged) are never
// shown, a rollback takes nothing back, and a resend, dropped before the
// masker, shows nothing twice. Within one logship process each line is
// written exactly once.
//
// Across a restart: each commit records in the state the position up to
// which lines were written before that commit (and a clean shutdown
// records the current one). A new logship rewrites, from the spool, the
// lines from that position on, and holds the partial line at the end as
// before. So after a clean restart nothing is written twice; after a crash
// the lines of the last commit (a group of chunks, up to about a MiB) may
// be written again (at least once, never lost).
//
// # Logs are never lost or overwritten
//
// Each run has an uploader goroutine. Every chunk interval it uploads the
// committed bytes not uploaded yet as the next live chunk objects, and as
// soon as a commit leaves Options.MaxChunkObject bytes (16 MiB) not
// uploaded it uploads a chunk of that size, so that a fast run's bytes go
// to S3 while it runs. Once the log is closed it stores the final object,
// only if the run has none yet (If-None-Match: *), then removes the live
// chunk objects (a finished log lives in one place), then the run's spool.
// The final object is assembled by S3 from the live chunks (ADR 0022): a
// multipart upload whose parts are server-side copies of the chunks of at
// least 5 MiB this process uploaded (their ETags, kept in memory, must be
// the copies'), and the other bytes sent from the spool in parts of at
// least 5 MiB but the last; a log under 5 MiB, one without such a chunk,
// or a server that cannot (s3log.ErrMultipartUnsupported: logged once,
// counted) gets one PutObject of the whole log. A failed assembly is
// aborted; for a run found closed in the spool at start, the uploads a
// logship before left (a crash during the assembly) are aborted first. S3 failures are retried with
// exponential backoff, for ever; the run is not failed, and Ship keeps
// acknowledging from the spool. Upload progress is in the state file, so
// a restart resumes it; a final object found already stored with this
// log's digest is this log's.
//
// An Open of a run this logship does not hold asks S3 for its final
// object first: a run finished and forgotten is answered as finished
// (next_sequence one past its last chunk; later chunks refused with
// ErrClosed), never written again. If S3 cannot be asked (within 10 s), the run is
// taken, and should its final object meet one already stored, the stored
// one stays, this log is left in its live chunk objects, logged and
// counted (hangar_logship_final_conflicts_total).
//
// A run that received no chunk and no Open for Options.IdleClose
// (HANGAR_LOG_IDLE_CLOSE) is closed by logship with what arrived and the
// footer "[hangar] log incomplete: ...", its final object marked
// incomplete (see idle.go). The spool's disk is guarded: below
// Options.MinFreeBytes free, new runs are refused until space returns
// (see diskguard.go).
package runlog
