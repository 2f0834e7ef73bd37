-- reserve: hold ARGV[6] nano-dollars in every scope, or in none.
-- KEYS[1] the hold record, KEYS[2..n+1] the scopes' accounts.
-- ARGV[5] id, ARGV[6] estimate, ARGV[7] expires (ms), ARGV[8] record ttl (ms),
-- ARGV[9..n+8] limits, ARGV[n+9..2n+8] scope keys (as the caller named them).
-- Returns {1, ''} reserved, {2, scope} refused, {3, state} id already ended.
sweep(prefix, now, done_ttl, sweep_max)
local id, estimate, expires = ARGV[5], ARGV[6], ARGV[7]
local n = #KEYS - 1
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'held' then
  return {1, ''}
end
if state then
  return {3, state}
end
-- Check every scope before touching any: all or nothing.
-- Exact: the caller keeps every amount and limit below 2^53, so these doubles are exact
-- or, past 2^53, already larger than any limit.
local want = tonumber(estimate)
for i = 1, n do
  local acct = redis.call('HMGET', KEYS[i + 1], 'spent', 'reserved')
  local committed = (tonumber(acct[1]) or 0) + (tonumber(acct[2]) or 0)
  if committed + want > tonumber(ARGV[8 + i]) then
    return {2, ARGV[8 + n + i]}
  end
end
local scopes = {}
for i = 1, n do
  if estimate ~= '0' then
    redis.call('HINCRBY', KEYS[i + 1], 'reserved', estimate)
  end
  scopes[i] = ARGV[8 + n + i]
end
redis.call('HSET', KEYS[1], 'state', 'held', 'amount', estimate, 'expires', expires,
  'scopes', table.concat(scopes, '\n'))
-- The record outlives its hold by done_ttl (the sweep shortens it to done_ttl on expiry).
redis.call('PEXPIRE', KEYS[1], ARGV[8])
redis.call('ZADD', prefix .. 'held', expires, id)
return {1, ''}
