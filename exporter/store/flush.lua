-- One flush of the state writer (exporter/store/writer.py), atomic on the server.
-- KEYS: 1 writer guard hash, 2 log stream, 3 symbols set, 3+1..3+nt ticker keys, then history
--       keys, then dedupe keys. In cluster mode every key of one call lives in one hash slot;
--       KEYS[2]/KEYS[3] repeat the guard key when the call has no log entry / no symbol set.
-- ARGV: 1 ticker ttl ms, 2 nt, 3 nsym (-1: keep the set), 4 history maxlen, 5 log maxlen,
--       6 dedupe ttl s, 7 guard ttl s, then nt ticker values, nsym members,
--       nh, nh x (seq, history key index, nfields, fields...),
--       nl, nl x (seq, dedupe KEYS index or 0, nf, fields...)
local nt = tonumber(ARGV[2])
local nsym = tonumber(ARGV[3])
local a = 8
for k = 1, nt do
  redis.call('SET', KEYS[3 + k], ARGV[a], 'PX', ARGV[1])
  a = a + 1
end
if nsym >= 0 then
  redis.call('DEL', KEYS[3])
  local last = a + nsym - 1
  local s = a
  while s <= last do
    local e = math.min(s + 999, last)
    redis.call('SADD', KEYS[3], unpack(ARGV, s, e))
    s = e + 1
  end
  a = a + nsym
end
local hdone = tonumber(redis.call('HGET', KEYS[1], 'history') or '0')
local ldone = tonumber(redis.call('HGET', KEYS[1], 'log') or '0')
local hlast = tostring(hdone)
local llast = tostring(ldone)
local hw, lw, dd, sk = 0, 0, 0, 0
local function save()
  redis.call('HSET', KEYS[1], 'history', hlast, 'log', llast)
  redis.call('EXPIRE', KEYS[1], ARGV[7])
end
local function add(key, maxlen, nf)
  local r = redis.pcall('XADD', key, 'MAXLEN', '~', maxlen, '*',
    unpack(ARGV, a + 3, a + 2 + 2 * nf))
  if type(r) == 'table' and r.err then
    if string.sub(r.err, 1, 9) ~= 'WRONGTYPE' then
      save()
      return redis.error_reply(r.err)
    end
    sk = sk + 1
    return false
  end
  return true
end
local nh = tonumber(ARGV[a])
a = a + 1
for _ = 1, nh do
  local nf = tonumber(ARGV[a + 2])
  if tonumber(ARGV[a]) > hdone then
    local ok = add(KEYS[3 + nt + tonumber(ARGV[a + 1])], ARGV[4], nf)
    if type(ok) == 'table' then return ok end
    if ok then hw = hw + 1 end
    hlast = ARGV[a]
  end
  a = a + 3 + 2 * nf
end
local nl = tonumber(ARGV[a])
a = a + 1
for _ = 1, nl do
  local di = tonumber(ARGV[a + 1])
  local dk = di > 0 and KEYS[di] or ''
  local nf = tonumber(ARGV[a + 2])
  if tonumber(ARGV[a]) > ldone then
    if dk ~= '' and redis.call('EXISTS', dk) == 1 then
      dd = dd + 1
    else
      local ok = add(KEYS[2], ARGV[5], nf)
      if type(ok) == 'table' then return ok end
      if ok then
        lw = lw + 1
        if dk ~= '' then redis.call('SET', dk, '1', 'EX', ARGV[6]) end
      end
    end
    llast = ARGV[a]
  end
  a = a + 3 + 2 * nf
end
save()
return {hw, lw, dd, sk}
