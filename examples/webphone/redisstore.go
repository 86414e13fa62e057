package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/redis/go-redis/v9"
	"github.com/sipws/sipws"
)

// redisStore is the locationStore of a cluster: the bindings of every node
// in Redis, those of this node also in a local mirror (a memStore) that
// finds them by connection when it closes and by expiry.
//
// Keys (Redis 7.0, so no per-field hash expiry: a sorted set scored by
// expiry plus one key per binding with its TTL):
//
//	sipws:webphone:b:USER\nKEY   the binding (owner line + JSON), PX = its expiry
//	sipws:webphone:u:USER        ZSET of KEY by expiry (ms)
//	sipws:webphone:c:CONTACT     ZSET of USER\nKEY by expiry, CONTACT = user@host of the Contact
//	sipws:webphone:on:NODE:RUN   ZSET (lex) of the users with bindings on that node run
//	sipws:webphone:node:NODE     heartbeat: "RUN SIP-ADDR", TTL 3 s (cluster.go)
//
// A binding's owner line is NODE/RUN/CONN: a node deletes the bindings of
// its connections only while they are still its own (another node may have
// replaced one: the phone moved), with a script that compares it.
type redisStore struct {
	rdb   *redis.Client
	cl    *cluster
	local *memStore
	log   *slog.Logger
}

// redisTimeout bounds one store operation.
const redisTimeout = 2 * time.Second

// keyTTLSlack keeps the index sets a little longer than their longest
// binding.
const keyTTLSlack = time.Minute

func newRedisStore(rdb *redis.Client, cl *cluster, log *slog.Logger) *redisStore {
	return &redisStore{rdb: rdb, cl: cl, local: newMemStore(), log: log}
}

func bindingKeyName(user, key string) string { return keyPrefix + "b:" + userKey(user) + "\n" + key }
func userSetKey(user string) string          { return keyPrefix + "u:" + userKey(user) }
func contactSetKey(ck string) string         { return keyPrefix + "c:" + ck }
func onlineKey(node, run string) string      { return keyPrefix + "on:" + node + ":" + run }

// storedBinding is a binding as JSON in Redis.
type storedBinding struct {
	User     string `json:"user"`
	Key      string `json:"key"`
	Contact  string `json:"contact"`
	Node     string `json:"node"`
	Run      string `json:"run"`
	Path     string `json:"path"`
	Conn     uint64 `json:"conn"`
	Instance string `json:"instance,omitempty"`
	RegID    int    `json:"reg_id,omitempty"`
	Outbound bool   `json:"outbound,omitempty"`
	CallID   string `json:"call_id"`
	CSeq     uint32 `json:"cseq"`
	Agent    string `json:"agent,omitempty"`
	Expires  int64  `json:"expires"` // Unix ms
	Updated  int64  `json:"updated"` // Unix ns
}

func owner(b binding) string {
	return b.node + "/" + b.run + "/" + strconv.FormatUint(uint64(b.conn), 10)
}

func encodeBinding(b binding) string {
	j, _ := json.Marshal(storedBinding{
		User: b.user, Key: b.key, Contact: b.contact.Value(), Node: b.node, Run: b.run, Path: b.path,
		Conn: uint64(b.conn), Instance: b.instance, RegID: b.regID, Outbound: b.outbound,
		CallID: b.callID, CSeq: b.cseq, Agent: b.agent, Expires: b.expires.UnixMilli(), Updated: b.updated.UnixNano(),
	})
	return owner(b) + "\n" + string(j)
}

func decodeBinding(v string) (binding, error) {
	_, j, ok := strings.Cut(v, "\n")
	if !ok {
		return binding{}, fmt.Errorf("binding without owner line")
	}
	var s storedBinding
	if err := json.Unmarshal([]byte(j), &s); err != nil {
		return binding{}, err
	}
	b := binding{
		user: s.User, key: s.Key, node: s.Node, run: s.Run, path: s.Path, conn: sipws.ConnID(s.Conn),
		instance: s.Instance, regID: s.RegID, outbound: s.Outbound, callID: s.CallID, cseq: s.CSeq,
		agent: s.Agent, expires: time.UnixMilli(s.Expires), updated: time.Unix(0, s.Updated),
	}
	name, err := sip.ParseAddressValue(s.Contact, &b.contact.Address, &b.contact.Params)
	if err != nil {
		return binding{}, fmt.Errorf("contact %q: %w", s.Contact, err)
	}
	b.contact.DisplayName = name
	return b, nil
}

// opCtx bounds one store operation by redisTimeout.
func opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), redisTimeout)
}

func (s *redisStore) fail(op string, err error) {
	if err != nil && err != redis.Nil {
		s.log.Warn("redis", "op", op, "err", err)
	}
}

func (s *redisStore) get(user, key string) (binding, bool) {
	c, cancel := opCtx()
	defer cancel()
	v, err := s.rdb.Get(c, bindingKeyName(user, key)).Result()
	if err != nil {
		s.fail("get", err)
		return binding{}, false
	}
	b, err := decodeBinding(v)
	if err != nil {
		s.fail("get", err)
		return binding{}, false
	}
	return b, true
}

func (s *redisStore) put(b binding) error {
	c, cancel := opCtx()
	defer cancel()
	b.node, b.run = s.cl.node, s.cl.run
	now := time.Now()
	// The user's cap counts the bindings of every node.
	uk := userSetKey(b.user)
	pp := s.rdb.Pipeline()
	pp.ZRemRangeByScore(c, uk, "-inf", strconv.FormatInt(now.UnixMilli(), 10))
	count := pp.ZCard(c, uk)
	oldV := pp.Get(c, bindingKeyName(b.user, b.key))
	_, err := pp.Exec(c)
	if err != nil && err != redis.Nil {
		s.fail("put", err)
		return fmt.Errorf("location service: %w", err)
	}
	old, hadOld := binding{}, false
	if v, err := oldV.Result(); err == nil {
		old, err = decodeBinding(v)
		hadOld = err == nil
	}
	if !hadOld && count.Val() >= maxBindingsPerUser && s.purgeDead(b.user, now) >= maxBindingsPerUser {
		return errTooManyBindings
	}
	// The connection's cap, and the mirror.
	if err := s.local.put(b); err != nil {
		return err
	}
	ttl := b.expires.Sub(now)
	if ttl < time.Millisecond {
		ttl = time.Millisecond
	}
	ck := contactKey(&b.contact.Address)
	member := userKey(b.user) + "\n" + b.key
	score := float64(b.expires.UnixMilli())
	_, err = s.rdb.TxPipelined(c, func(tx redis.Pipeliner) error {
		if hadOld {
			if ock := contactKey(&old.contact.Address); ock != ck {
				tx.ZRem(c, contactSetKey(ock), member)
			}
		}
		tx.Set(c, bindingKeyName(b.user, b.key), encodeBinding(b), ttl)
		tx.ZAdd(c, uk, redis.Z{Score: score, Member: b.key})
		tx.Expire(c, uk, maxExpires*time.Second+keyTTLSlack)
		tx.ZAdd(c, contactSetKey(ck), redis.Z{Score: score, Member: member})
		tx.Expire(c, contactSetKey(ck), maxExpires*time.Second+keyTTLSlack)
		ok := onlineKey(s.cl.node, s.cl.run)
		tx.ZAdd(c, ok, redis.Z{Member: userKey(b.user)})
		tx.Expire(c, ok, maxExpires*time.Second+keyTTLSlack)
		return nil
	})
	if err != nil {
		s.fail("put", err)
		s.local.remove(b.user, b.key)
		return fmt.Errorf("location service: %w", err)
	}
	if hadOld && (old.node != b.node || old.run != b.run) {
		s.log.Info("binding moved to this node", "user", b.user, "from", old.node)
	}
	return nil
}

// delScript deletes a binding and its index entries, when its owner line
// is ARGV[1] (any owner when ARGV[1] is empty). KEYS: binding, user set,
// contact set; ARGV: owner, key, USER\nKEY.
var delScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[3])
  return 0
end
if ARGV[1] ~= '' and string.sub(v, 1, string.len(ARGV[1]) + 1) ~= ARGV[1] .. '\n' then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[3])
return 1`)

// del deletes b from Redis (only while owned by own, unless own is "") and
// from the mirror, and takes the user off our online set when they have no
// binding here any more.
func (s *redisStore) del(b binding, own string) {
	c, cancel := opCtx()
	defer cancel()
	member := userKey(b.user) + "\n" + b.key
	err := delScript.Run(c, s.rdb, []string{bindingKeyName(b.user, b.key), userSetKey(b.user), contactSetKey(contactKey(&b.contact.Address))}, own, b.key, member).Err()
	s.fail("delete", err)
	if lb, ok := s.local.get(b.user, b.key); ok && owner(lb) == owner(b) {
		s.local.remove(b.user, b.key)
	}
	s.offline(c, b.user)
}

func (s *redisStore) offline(c context.Context, user string) {
	if len(s.local.lookup(user, time.Time{})) == 0 {
		s.fail("online", s.rdb.ZRem(c, onlineKey(s.cl.node, s.cl.run), userKey(user)).Err())
	}
}

func (s *redisStore) remove(user, key string) (binding, bool) {
	b, ok := s.get(user, key)
	if !ok {
		if lb, ok := s.local.remove(user, key); ok {
			return lb, true
		}
		return binding{}, false
	}
	s.del(b, "")
	return b, true
}

// all returns every binding of user in Redis, live or not.
func (s *redisStore) all(user string, now time.Time) []binding {
	c, cancel := opCtx()
	defer cancel()
	keys, err := s.rdb.ZRangeByScore(c, userSetKey(user), &redis.ZRangeBy{Min: "(" + strconv.FormatInt(now.UnixMilli(), 10), Max: "+inf"}).Result()
	if err != nil || len(keys) == 0 {
		s.fail("lookup", err)
		return nil
	}
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = bindingKeyName(user, k)
	}
	return s.mget(c, names, now)
}

func (s *redisStore) mget(c context.Context, names []string, now time.Time) []binding {
	vals, err := s.rdb.MGet(c, names...).Result()
	if err != nil {
		s.fail("lookup", err)
		return nil
	}
	var out []binding
	for _, v := range vals {
		str, ok := v.(string)
		if !ok {
			continue // expired since
		}
		b, err := decodeBinding(str)
		if err != nil {
			s.fail("lookup", err)
			continue
		}
		if b.expires.After(now) {
			out = append(out, b)
		}
	}
	return out
}

// purgeDead deletes the bindings of user held by node runs that are no
// longer live (they would count in the user's cap until they expire: a
// phone that moved from a dead node registers beside its old binding) and
// returns how many are left.
func (s *redisStore) purgeDead(user string, now time.Time) int {
	left := 0
	for _, b := range s.all(user, now) {
		if s.cl.isLive(b.node, b.run) {
			left++
			continue
		}
		s.del(b, owner(b))
	}
	return left
}

func (s *redisStore) removeUser(user string, conn sipws.ConnID) []binding {
	var out []binding
	for _, b := range s.all(user, time.Time{}) {
		if conn == 0 || (b.node == s.cl.node && b.run == s.cl.run && b.conn == conn) {
			s.del(b, "")
			out = append(out, b)
		}
	}
	return out
}

func (s *redisStore) dropConn(id sipws.ConnID) []binding {
	bs := s.local.dropConn(id)
	for _, b := range bs {
		s.del(b, owner(b))
	}
	return bs
}

func (s *redisStore) expire(now time.Time) []binding {
	bs := s.local.expire(now)
	for _, b := range bs {
		s.del(b, owner(b))
	}
	return bs
}

// live keeps the bindings of live node runs, most recent first.
func (s *redisStore) live(bs []binding) []binding {
	bs = slices.DeleteFunc(bs, func(b binding) bool { return !s.cl.isLive(b.node, b.run) })
	slices.SortFunc(bs, byRecency)
	return bs
}

func (s *redisStore) lookup(user string, now time.Time) []binding {
	return s.live(s.all(user, now))
}

func (s *redisStore) byContact(u *sip.Uri, now time.Time) []binding {
	c, cancel := opCtx()
	defer cancel()
	members, err := s.rdb.ZRangeByScore(c, contactSetKey(contactKey(u)), &redis.ZRangeBy{Min: "(" + strconv.FormatInt(now.UnixMilli(), 10), Max: "+inf", Count: maxBindingsPerUser, Offset: 0}).Result()
	if err != nil || len(members) == 0 {
		s.fail("contact", err)
		return nil
	}
	names := make([]string, 0, len(members))
	for _, m := range members {
		if user, key, ok := strings.Cut(m, "\n"); ok {
			names = append(names, bindingKeyName(user, key))
		}
	}
	return s.live(s.mget(c, names, now))
}

// users pages the users with bindings on live node runs: the union of
// their online sets, merged here (each gives at most limit names after
// after). The total counts each user once.
func (s *redisStore) users(after string, limit int) ([]string, int) {
	c, cancel := opCtx()
	defer cancel()
	nodes := s.cl.liveNodes()
	keys := make([]string, 0, len(nodes))
	for n, i := range nodes {
		keys = append(keys, onlineKey(n, i.run))
	}
	min := "-"
	if after != "" {
		min = "(" + after
	}
	pp := s.rdb.Pipeline()
	pages := make([]*redis.StringSliceCmd, len(keys))
	for i, k := range keys {
		pages[i] = pp.ZRangeByLex(c, k, &redis.ZRangeBy{Min: min, Max: "+", Count: int64(limit)})
	}
	all := pp.ZUnion(c, redis.ZStore{Keys: keys})
	if _, err := pp.Exec(c); err != nil && err != redis.Nil {
		s.fail("online", err)
		return nil, 0
	}
	var names []string
	for _, pg := range pages {
		names = append(names, pg.Val()...)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	if len(names) > limit {
		names = names[:limit]
	}
	return names, len(all.Val())
}

// bindings pages this node's bindings (the operator's view is per node).
func (s *redisStore) bindings(afterUser, afterKey string, limit int, now time.Time) ([]binding, int) {
	return s.local.bindings(afterUser, afterKey, limit, now)
}
