package link

import (
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
)

// SessionNames returns the gateway's MQTT client id and its pool's
// shared-subscription group. Both are derived from the pool's private key, so
// that another pool (any holder of a certificate from the same CA) can guess
// neither: it can therefore neither take over this gateway's persistent
// session by connecting with its client id (which would discard the runs
// queued in it) nor join the pool's shared-subscription group (which would
// give it a turn of the pool's runs, dropped by the broker's ACL). Brokers do
// not tell one client the ids of others. The names are stable across restarts
// (same key, pool and worker id), so the session resumes; every gateway of the
// pool derives the same group and, with its own worker id, its own client id.
func SessionNames(poolKey *rsa.PrivateKey, poolID, workerID string) (clientID, shareGroup string) {
	seed := sha256.Sum256(append([]byte("hangar.mqtt-session.v1\x00"), poolKey.D.Bytes()...))
	name := func(parts ...string) string {
		m := hmac.New(sha256.New, seed[:])
		for _, p := range parts {
			m.Write([]byte(p))
			m.Write([]byte{0})
		}
		return hex.EncodeToString(m.Sum(nil)[:16])
	}
	return "hangar-gw-" + name("client", poolID, workerID), "hangar-" + name("share", poolID)
}
