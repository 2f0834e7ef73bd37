-- lease: hold up to ARGV[6] in every scope at once, capped by the tightest scope's room.
-- KEYS[1..n] the scopes' accounts. ARGV[5] holder, ARGV[6] want, ARGV[7] expires (ms),
-- ARGV[8] record ttl (ms), ARGV[9..n+8] limits, ARGV[n+9..2n+8] scope keys.
-- Returns {granted, id}; {'0', ''} when some scope has no room.
sweep(prefix, now, done_ttl, sweep_max)
local holder, expires = ARGV[5], ARGV[7]
local n = #KEYS
local grant = tonumber(ARGV[6])
for i = 1, n do
  local acct = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
  local room = tonumber(ARGV[8 + i]) - (tonumber(acct[1]) or 0) - (tonumber(acct[2]) or 0)
  if room < grant then
    grant = room
  end
end
if grant <= 0 then
  return {'0', ''}
end
-- %d of a double below 2^53 is exact (tostring would say 1e+15).
local amount = string.format('%d', grant)
local id = 'lease/' .. holder .. '/' .. redis.call('INCR', prefix .. 'seq')
local scopes = {}
for i = 1, n do
  redis.call('HINCRBY', KEYS[i], 'reserved', amount)
  scopes[i] = ARGV[8 + n + i]
end
local hold = prefix .. 'hold:' .. id
redis.call('HSET', hold, 'state', 'held', 'amount', amount, 'expires', expires,
  'scopes', table.concat(scopes, '\n'))
redis.call('PEXPIRE', hold, ARGV[8])
redis.call('ZADD', prefix .. 'held', expires, id)
return {amount, id}
