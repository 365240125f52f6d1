// The Redis side of the fleet view (fleet-sync.ts), as Lua scripts: each is one round trip that
// reads and writes atomically, so two members racing on the same device, alert or silence
// cannot both win, and a chunk's summary costs one call however many devices it holds.
// Times compared here are the members' own (receive times, alert starts and ends); expiries are
// relative (PX), so neither a member's clock nor a test's ManualClock has to agree with Redis.

/**
 * A written chunk: keeps the newest reading per device in the last-seen hash and publishes the
 * chunk. KEYS[1] last-seen hash; ARGV[1] channel, ARGV[2] message ('' publishes nothing), then
 * pairs of deviceId and `<receivedAt> <json>`. An older reading (a batch resent after a lease
 * moved) never replaces a newer one.
 */
export const WRITTEN_LUA = `
local function leading(v)
  local s = string.match(v, '^(%S+)')
  return s and tonumber(s)
end
for i = 3, #ARGV, 2 do
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  local keep = false
  if old then
    local oldAt = leading(old)
    local newAt = leading(ARGV[i + 1])
    keep = oldAt ~= nil and newAt ~= nil and oldAt > newAt
  end
  if not keep then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
if ARGV[2] ~= '' then return redis.call('PUBLISH', ARGV[1], ARGV[2]) end
return 0
`;

/** Drops last-seen entries still holding exactly the value read (a device forgotten); a newer write in between stays. KEYS[1] hash; ARGV pairs of field and value. */
export const PRUNE_LASTSEEN_LUA = `
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
`;

/**
 * Claims the announcement of alert transitions; returns 1 (this member sends) or 0 per key.
 * One key per alert (`claim:<rule|kind|subject>`) holds the state of its episode:
 * - firing (alert started at S): claimed when the key is absent, or holds a resolve from before S
 *   (the previous episode). `F ...` means this episode was announced; `R E` with E >= S means
 *   this member is late and the episode it fires is over already: not announced again.
 * - resolved (alert ended at E): claimed unless the key holds `R` (resolved already) or an `F`
 *   that started after E (a later episode; this member resolves late).
 * KEYS: claim keys. ARGV[1] member, ARGV[2] firing TTL ms, ARGV[3] resolved TTL ms, then per key:
 * status, startsAt, endsAt.
 */
export const CLAIM_LUA = `
local out = {}
for i = 1, #KEYS do
  local base = 3 + (i - 1) * 3
  local status = ARGV[base + 1]
  local startsAt = tonumber(ARGV[base + 2])
  local endsAt = tonumber(ARGV[base + 3])
  local v = redis.call('GET', KEYS[i])
  local mark, at
  if v then
    local m, t = string.match(v, '^(%a) (%S+)')
    mark = m
    at = t and tonumber(t)
  end
  local claim = 0
  if status == 'firing' then
    if not v or mark == nil or at == nil or (mark == 'R' and at < startsAt) then
      redis.call('SET', KEYS[i], 'F ' .. ARGV[base + 2] .. ' ' .. ARGV[1], 'PX', ARGV[2])
      claim = 1
    end
  else
    if not v or mark == nil or at == nil or (mark == 'F' and at <= endsAt) then
      redis.call('SET', KEYS[i], 'R ' .. ARGV[base + 3] .. ' ' .. ARGV[1], 'PX', ARGV[3])
      claim = 1
    end
  end
  out[i] = claim
end
return out
`;

/**
 * Stores an ack record if it is at least as new as the one held. KEYS[1] acks hash; ARGV[1]
 * channel, ARGV[2] field (alert key), ARGV[3] `<at> <json>`, ARGV[4] message ('' publishes
 * nothing). Returns 1 when stored.
 */
export const ACK_LUA = `
local function leading(v)
  local s = string.match(v, '^(%S+)')
  return s and tonumber(s)
end
local old = redis.call('HGET', KEYS[1], ARGV[2])
if old then
  local oldAt = leading(old)
  local newAt = leading(ARGV[3])
  if oldAt ~= nil and newAt ~= nil and oldAt > newAt then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[1], ARGV[4]) end
return 1
`;

/**
 * The alert's episode ended at ARGV[2]: its ack record goes, unless made later (a new episode's),
 * and the members are told so that none applies it to a later episode. KEYS[1] acks hash; ARGV[1]
 * field, ARGV[3] channel, ARGV[4] message.
 */
export const ACK_END_LUA = `
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 0 end
local s = string.match(old, '^(%S+)')
local at = s and tonumber(s)
if at ~= nil and at > tonumber(ARGV[2]) then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
`;

/**
 * Stores a silence record until the silence's end and indexes it. KEYS[1] index, KEYS[2] silence
 * key; ARGV[1] channel, ARGV[2] id, ARGV[3] endsAt, ARGV[4] record json, ARGV[5] message ('' none),
 * ARGV[6] now, ARGV[7] 'put' (replace: a new silence, an early expiry) or 'seed' (only if absent:
 * a member bringing back what Redis lost). Returns 1 when stored.
 */
export const SILENCE_LUA = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[6])
local ttl = tonumber(ARGV[3]) - tonumber(ARGV[6])
if ttl <= 0 then return 0 end
local set
if ARGV[7] == 'seed' then
  set = redis.call('SET', KEYS[2], ARGV[4], 'PX', ttl, 'NX')
else
  set = redis.call('SET', KEYS[2], ARGV[4], 'PX', ttl)
end
if not set then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[1], ARGV[5]) end
return 1
`;
