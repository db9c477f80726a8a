#!lua name=switchboard_v1
-- The server side of switchboard's Redis durable mode (see the crate docs,
-- "Durable mode"). Loaded with FUNCTION LOAD REPLACE by every switchboard
-- handle on connect; the library name carries a version, so handles of
-- another switchboard version keep their own.
--
-- The registry is a hash: durable pattern -> stream key. Its version key
-- holds a number that only grows (microseconds, so it keeps growing after a
-- FLUSHALL), published with the registry on every change.

-- The dot-separated tokens of a subject or pattern.
local function tokens(text)
  local out = {}
  for token in string.gmatch(text, '[^.]+') do
    out[#out + 1] = token
  end
  return out
end

-- switchboard's Pattern::matches: `*` is one token, `>` one or more to the end.
local function matches(pattern, subject)
  local p, s = tokens(pattern), tokens(subject)
  for i = 1, #p do
    local token = p[i]
    if token == '>' then
      return #s >= i
    end
    if i > #s then
      return false
    end
    if token ~= '*' and token ~= s[i] then
      return false
    end
  end
  return #p == #s
end

-- Makes the registry version grow: at least by one, and to the server's
-- clock in microseconds, so that it grows even after the key was lost.
local function bump(version_key)
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
  local old = tonumber(redis.call('GET', version_key) or '0') or 0
  local version = math.max(old + 1, now)
  local text = string.format('%d', version)
  redis.call('SET', version_key, text)
  return text
end

-- Publishes the registry (its version, then its patterns, one a line) on the
-- changes channel; returns {version, receivers, patterns...}.
local function announce(registry, version_key, channel)
  local version = bump(version_key)
  local patterns = redis.call('HKEYS', registry)
  local receivers = redis.call('PUBLISH', channel, version .. '\n' .. table.concat(patterns, '\n'))
  local reply = { version, receivers }
  for _, pattern in ipairs(patterns) do
    reply[#reply + 1] = pattern
  end
  return reply
end

-- FCALL switchboard_v1_publish 1 <registry> <subject> <body> <maxlen>
-- Stores the message in the stream of every durable pattern it matches
-- (by the registry as it is now), then PUBLISHes it. Returns how many
-- streams stored it.
redis.register_function('switchboard_v1_publish', function(keys, args)
  local subject, body, maxlen = args[1], args[2], args[3]
  local registry = redis.call('HGETALL', keys[1])
  local stored = 0
  for i = 1, #registry, 2 do
    if matches(registry[i], subject) then
      local id = redis.call('XADD', registry[i + 1], 'NOMKSTREAM', 'MAXLEN', '~', maxlen, '*', 's', subject, 'b', body)
      if id then
        stored = stored + 1
      end
    end
  end
  redis.call('PUBLISH', subject, body)
  return stored
end)

-- FCALL switchboard_v1_register 3 <registry> <version> <stream> <pattern> <group> <channel>
-- Creates the consumer group (reading from now on) and the stream, and
-- registers the pattern. Returns {0, 0} when the registry did not change,
-- else what `announce` returns.
redis.register_function('switchboard_v1_register', function(keys, args)
  local created = redis.pcall('XGROUP', 'CREATE', keys[3], args[2], '$', 'MKSTREAM')
  if type(created) == 'table' and created.err and not string.find(created.err, 'BUSYGROUP', 1, true) then
    return created
  end
  if redis.call('HSETNX', keys[1], args[1], keys[3]) == 0 then
    return { 0, 0 }
  end
  return announce(keys[1], keys[2], args[3])
end)

-- FCALL switchboard_v1_unregister 3 <registry> <version> <stream> <pattern> <group> <channel>
-- Destroys the consumer group; once the stream has no group left, deletes it
-- and its registry entry. Returns like switchboard_v1_register.
redis.register_function('switchboard_v1_unregister', function(keys, args)
  if redis.call('EXISTS', keys[3]) == 1 then
    redis.call('XGROUP', 'DESTROY', keys[3], args[2])
    if #redis.call('XINFO', 'GROUPS', keys[3]) > 0 then
      return { 0, 0 }
    end
    redis.call('DEL', keys[3])
  end
  if redis.call('HDEL', keys[1], args[1]) == 0 then
    return { 0, 0 }
  end
  return announce(keys[1], keys[2], args[3])
end)

-- FCALL_RO switchboard_v1_registry 2 <registry> <version>
-- Returns {version, patterns...}.
redis.register_function {
  function_name = 'switchboard_v1_registry',
  callback = function(keys)
    local reply = { redis.call('GET', keys[2]) or '0' }
    for _, pattern in ipairs(redis.call('HKEYS', keys[1])) do
      reply[#reply + 1] = pattern
    end
    return reply
  end,
  flags = { 'no-writes' },
}

-- FCALL switchboard_v1_claim 1 <stream> <group> <consumer> <min idle ms> <count> <max deliver, 0: none> <cursor> <own: 1 or 0>
-- With own = 1: this consumer's own pending entries from <cursor> on (a
-- member back under its name, or reconnected). Else: XAUTOCLAIM of entries
-- idle at least <min idle ms> (unacknowledged past the ack deadline, or
-- nacked), from <cursor> on. Entries delivered more than <max deliver>
-- times are acknowledged and left out (the cap is reached). Returns
-- {next cursor, {{id, fields, delivery count}...}}; the cursor is '0-0'
-- when the scan is complete.
redis.register_function('switchboard_v1_claim', function(keys, args)
  local stream, group, consumer = keys[1], args[1], args[2]
  local max_deliver = tonumber(args[5]) or 0
  local cursor, entries
  if args[7] == '1' then
    local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', args[4], 'STREAMS', stream, args[6])
    entries = (read and read[1] and read[1][2]) or {}
    cursor = '0-0'
    if #entries > 0 then
      cursor = entries[#entries][1]
    end
  else
    local claimed = redis.call('XAUTOCLAIM', stream, group, consumer, args[3], args[6], 'COUNT', args[4])
    cursor, entries = claimed[1], claimed[2]
  end
  local out = {}
  for _, entry in ipairs(entries) do
    local id, fields = entry[1], entry[2]
    local pending = redis.call('XPENDING', stream, group, id, id, 1)
    local count = (pending[1] and pending[1][4]) or 1
    if not fields then
      -- Trimmed from the stream (MAXLEN) while pending: nothing to deliver.
      redis.call('XACK', stream, group, id)
    elseif max_deliver > 0 and count > max_deliver then
      redis.call('XACK', stream, group, id)
    else
      out[#out + 1] = { id, fields, count }
    end
  end
  return { cursor, out }
end)

-- FCALL switchboard_v1_matches 0 <pattern> <subject>: 1 if it matches, else 0
-- (for the adapter's tests, which compare it with Pattern::matches).
redis.register_function {
  function_name = 'switchboard_v1_matches',
  callback = function(_, args)
    if matches(args[1], args[2]) then
      return 1
    end
    return 0
  end,
  flags = { 'no-writes' },
}
