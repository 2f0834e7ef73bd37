-- Envoy RLS check-and-increment over sliding windows, all descriptors or none.
--
-- Per descriptor i: KEYS[2i-1] the current window's counter, KEYS[2i] the previous one's;
-- ARGV[1] now (ms); ARGV[4i-2..4i+1] limit, hits, window (ms), current window start (ms).
-- The rate at `now` is previous x (share of the previous window still inside the last
-- `window` ms, rounded up) + current: filter/core/src/rate.rs's sliding-window counter,
-- so there is no 2x burst at a window boundary. As in rate.rs, a descriptor whose window
-- is empty admits one request even when `hits` alone passes the limit (a single prompt
-- larger than the TPM would otherwise never pass).
-- If any descriptor is over, nothing is counted. Returns {any_over, code_1, used_1, ...}
-- with code 1 OK, 2 OVER_LIMIT and `used` after this request (or before, when refused).
local now = tonumber(ARGV[1])
local n = #KEYS / 2
local used, codes, over = {}, {}, 0
for i = 1, n do
  local b = 4 * (i - 1) + 1
  local limit, hits = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2])
  local window, start = tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local cur = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local prev = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  local remaining = window - (now - start)
  if remaining < 0 then
    remaining = 0
  end
  local u = math.ceil(prev * remaining / window) + cur
  used[i] = u
  codes[i] = 1
  if u > 0 and u + hits > limit then
    codes[i] = 2
    over = 1
  end
end
if over == 0 then
  for i = 1, n do
    local b = 4 * (i - 1) + 1
    if ARGV[b + 2] ~= '0' then
      redis.call('INCRBY', KEYS[2 * i - 1], ARGV[b + 2])
      -- The counter is read as "previous" during the next window, then dropped.
      redis.call('PEXPIRE', KEYS[2 * i - 1], 2 * tonumber(ARGV[b + 3]))
    end
    used[i] = used[i] + tonumber(ARGV[b + 2])
  end
end
local out = {over}
for i = 1, n do
  out[2 * i] = codes[i]
  out[2 * i + 1] = string.format('%d', used[i])
end
return out
