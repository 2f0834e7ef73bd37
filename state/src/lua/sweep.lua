-- Shared head of every ledger script: expire the holds due at `now` before anything else,
-- so a crashed replica's holds come back without a reaper process.
--
-- An expired hold gives its amount back to every scope and keeps its record (state
-- "expired") for `done_ttl` ms: a settle that arrives late still records its spend.
-- At most `max` holds per call keep every script short; the rest go on the next call.
-- Amounts stay strings from ARGV to HINCRBY: Lua numbers are doubles, and
-- tostring(1e15) is "1e+15", which HINCRBY would refuse.
local function sweep(prefix, now, done_ttl, max)
  local held = prefix .. 'held'
  local due = redis.call('ZRANGEBYSCORE', held, '-inf', now, 'LIMIT', 0, max)
  for _, id in ipairs(due) do
    local hold = prefix .. 'hold:' .. id
    local f = redis.call('HMGET', hold, 'state', 'amount', 'scopes')
    if f[1] == 'held' then
      if f[2] ~= '0' then
        for key in string.gmatch(f[3], '[^\n]+') do
          redis.call('HINCRBY', prefix .. 'acct:' .. key, 'reserved', '-' .. f[2])
        end
      end
      redis.call('HSET', hold, 'state', 'expired')
      redis.call('PEXPIRE', hold, done_ttl)
    end
    redis.call('ZREM', held, id)
  end
  return due
end

local prefix, now, done_ttl, sweep_max = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
