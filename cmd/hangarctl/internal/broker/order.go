package broker

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// queueOrder remembers the order in which messages were queued in each
// session (client id), so that a resumed session gets them again in that
// order (see certHook.OnSessionEstablished). mochi v2.7.9 keeps a session's
// queued messages in a map by packet id and resends them sorted only by the
// second they were published in (Inflight.GetAll, inflight.go:86, on
// uint16(Created)) and in map order within a second.
//
// A message's rank is the time it was first queued, in nanoseconds, made
// strictly increasing; with a session store it is kept with the message (as
// its "sent" time), so that the order survives a restart.
type queueOrder struct {
	mu   sync.Mutex
	last int64
	rank map[string]map[uint16]int64 // client id, packet id
}

func newQueueOrder() *queueOrder {
	return &queueOrder{rank: map[string]map[uint16]int64{}}
}

// queued records that the message with packet id pid was queued in the
// session of client id: a first send (dup false) takes the next rank, a
// resend keeps the rank the message has. It returns the rank.
func (o *queueOrder) queued(id string, pid uint16, dup bool) int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	if r, ok := o.rank[id][pid]; ok && dup {
		return r
	}
	r := time.Now().UnixNano()
	if r <= o.last {
		r = o.last + 1
	}
	o.set(id, pid, r)
	return r
}

// restored records the rank of a message read back from the session store.
// Ranks written before they were kept (a time in seconds) are ignored.
func (o *queueOrder) restored(id string, pid uint16, rank int64) {
	if rank < 1e12 {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.set(id, pid, rank)
}

// set records a rank. Call with o.mu held.
func (o *queueOrder) set(id string, pid uint16, r int64) {
	m, ok := o.rank[id]
	if !ok {
		m = map[uint16]int64{}
		o.rank[id] = m
	}
	m[pid] = r
	o.last = max(o.last, r)
}

// lookup returns the rank of a queued message.
func (o *queueOrder) lookup(id string, pid uint16) (int64, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	r, ok := o.rank[id][pid]
	return r, ok
}

// done forgets a message that left the session (acknowledged or dropped).
func (o *queueOrder) done(id string, pid uint16) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if m, ok := o.rank[id]; ok {
		delete(m, pid)
		if len(m) == 0 {
			delete(o.rank, id)
		}
	}
}

// forget forgets every message of the session of client id.
func (o *queueOrder) forget(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.rank, id)
}

// sort sorts messages of the session of client id in the order they were
// queued and returns their ranks; those without a rank (none are expected)
// come first, by the second they were published in, then by packet id.
func (o *queueOrder) sort(id string, pks []packets.Packet) []int64 {
	type ranked struct {
		pk   packets.Packet
		rank int64
	}
	rs := make([]ranked, len(pks))
	o.mu.Lock()
	for i, pk := range pks {
		rs[i] = ranked{pk, o.rank[id][pk.PacketID]}
	}
	o.mu.Unlock()
	slices.SortStableFunc(rs, func(a, b ranked) int {
		return cmp.Or(cmp.Compare(a.rank, b.rank), cmp.Compare(a.pk.Created, b.pk.Created), cmp.Compare(a.pk.PacketID, b.pk.PacketID))
	})
	ranks := make([]int64, len(pks))
	for i, r := range rs {
		pks[i], ranks[i] = r.pk, r.rank
	}
	return ranks
}
