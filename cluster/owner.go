package cluster

// Channel ownership by rendezvous (highest random weight) hashing: every
// live member scores the key and the highest score owns it. Each node
// computes the same answer from the same membership, with no coordination;
// when a member leaves only the keys it owned move (each to the runner-up,
// which is spread evenly over the others), and a member that joins takes
// only the keys it now wins.
//
// Scores: k = FNV-1a 64 of app+"\x00"+channel, n = FNV-1a 64 of the node
// name (computed once per membership change), score = fmix64(k ^ n)
// (MurmurHash3's 64-bit finalizer, so every bit of k and n reaches every
// bit of the score). Equal scores, which are vanishingly rare, go to the
// greater name.

const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// fnvAdd continues an FNV-1a 64 hash over s.
func fnvAdd(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime64
	}
	return h
}

// nameHash is a member name's hash.
func nameHash(name string) uint64 { return fnvAdd(fnvOffset64, name) }

// keyHash is the hash of app+"\x00"+channel, without building the string.
func keyHash(app, channel string) uint64 {
	h := fnvAdd(fnvOffset64, app)
	h ^= 0
	h *= fnvPrime64
	return fnvAdd(h, channel)
}

// fmix64 is MurmurHash3's finalizer.
func fmix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// rendezvous returns the index of the winner among names (with their
// nameHash values in hashes) for key, or -1 when names is empty.
func rendezvous(names []string, hashes []uint64, key uint64) int {
	best := -1
	var bestScore uint64
	for i, h := range hashes {
		s := fmix64(key ^ h)
		if best < 0 || s > bestScore || (s == bestScore && names[i] > names[best]) {
			best, bestScore = i, s
		}
	}
	return best
}

// OwnerOf returns which of names owns (app, channel): the same answer
// Owner gives when names are the live members. It exists for tools and
// tests that reason about ownership without a running node; it hashes
// every name on each call.
func OwnerOf(names []string, app, channel string) string {
	hashes := make([]uint64, len(names))
	for i, n := range names {
		hashes[i] = nameHash(n)
	}
	i := rendezvous(names, hashes, keyHash(app, channel))
	if i < 0 {
		return ""
	}
	return names[i]
}

// Owner returns the name of the live member that owns (app, channel):
// the rendezvous-hash winner over the members Members returns, less those
// draining (Meta.Draining; all of them if every one is). Every node with
// the same membership gets the same answer. It reads a cached
// snapshot (no lock, no allocation) and may be called from any goroutine.
// After Leave or Shutdown it answers from the last membership it knew.
func (c *Cluster) Owner(app, channel string) string {
	v := c.view.Load()
	i := rendezvous(v.owners, v.ownerHashes, keyHash(app, channel))
	if i < 0 {
		return c.name
	}
	return v.owners[i]
}
