-- finish: settle (ARGV[6] = 'settle', ARGV[7] = actual) or release (ARGV[6] = 'release')
-- the hold KEYS[1] named ARGV[5]. Returns {ending, spent}: ending is 'applied',
-- 'after_expiry', 'repeated' or 'unknown'; spent is the hold's first scope's spend after
-- this change, read in the same script (so exactly one return sees a threshold crossed);
-- '0' when this call changed nothing (repeated, unknown).
--
-- Settle is unconditional: spend is added even past the limit (recorded overspend).
-- The record's state is the gate: only a 'held' or 'expired' record changes the
-- accounts, and every path leaves it 'settled' or 'released', so a repeat changes nothing.
sweep(prefix, now, done_ttl, sweep_max)
local hold, id, mode, actual = KEYS[1], ARGV[5], ARGV[6], ARGV[7]
local f = redis.call('HMGET', hold, 'state', 'amount', 'scopes')
local state = f[1]
if not state then
  return {'unknown', '0'}
end
local function first_spent()
  local first = string.match(f[3] or '', '[^\n]+')
  if not first then
    return '0'
  end
  return redis.call('HGET', prefix .. 'acct:' .. first, 'spent') or '0'
end
local final = 'released'
if mode == 'settle' then
  final = 'settled'
end
if state == 'held' then
  for key in string.gmatch(f[3], '[^\n]+') do
    local acct = prefix .. 'acct:' .. key
    if f[2] ~= '0' then
      redis.call('HINCRBY', acct, 'reserved', '-' .. f[2])
    end
    if mode == 'settle' and actual ~= '0' then
      redis.call('HINCRBY', acct, 'spent', actual)
    end
  end
  redis.call('ZREM', prefix .. 'held', id)
  redis.call('HSET', hold, 'state', final)
  redis.call('PEXPIRE', hold, done_ttl)
  return {'applied', first_spent()}
end
if state == 'expired' then
  -- The estimate already came back when the hold expired; only the spend is new.
  redis.call('HSET', hold, 'state', final)
  redis.call('PEXPIRE', hold, done_ttl)
  if mode == 'settle' then
    if actual ~= '0' then
      for key in string.gmatch(f[3], '[^\n]+') do
        redis.call('HINCRBY', prefix .. 'acct:' .. key, 'spent', actual)
      end
    end
    return {'after_expiry', first_spent()}
  end
end
return {'repeated', '0'}
