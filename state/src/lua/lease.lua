-- lease: hold up to ARGV[6] in every scope at once, capped by the tightest scope's room.
-- KEYS[1..n] the scopes' accounts. ARGV[5] holder, ARGV[6] want, ARGV[7] expires (ms),
-- ARGV[8] record ttl (ms), ARGV[9..n+8] limits, ARGV[n+9..2n+8] scope keys.
-- Returns {granted, id, room}: room is what the tightest scope has left after the grant
-- (0 when full or overspent). The hold and its id exist even when 0 is granted: the holder
-- always has an id to report its spend under.
sweep(prefix, now, done_ttl, sweep_max)
local holder, expires = ARGV[5], ARGV[7]
local n = #KEYS
local room = nil
for i = 1, n do
  local acct = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
  local left = tonumber(ARGV[8 + i]) - (tonumber(acct[1]) or 0) - (tonumber(acct[2]) or 0)
  if room == nil or left < room then
    room = left
  end
end
if room < 0 then
  room = 0
end
local grant = tonumber(ARGV[6])
if room < grant then
  grant = room
end
-- %d of a double below 2^53 is exact (tostring would say 1e+15).
local amount = string.format('%d', grant)
local id = 'lease/' .. holder .. '/' .. redis.call('INCR', prefix .. 'seq')
local scopes = {}
for i = 1, n do
  if amount ~= '0' then
    redis.call('HINCRBY', KEYS[i], 'reserved', amount)
  end
  scopes[i] = ARGV[8 + n + i]
end
local hold = prefix .. 'hold:' .. id
redis.call('HSET', hold, 'state', 'held', 'amount', amount, 'expires', expires,
  'scopes', table.concat(scopes, '\n'))
redis.call('PEXPIRE', hold, ARGV[8])
redis.call('ZADD', prefix .. 'held', expires, id)
return {amount, id, string.format('%d', room - grant)}
