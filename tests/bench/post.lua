-- wrk script: POSTs a JSON body with a text unique to each request.
--   BENCH_FIELD  the JSON field carrying the text: "message" (seed API) or "content" (v1)
--   BENCH_LIMIT  optional: each thread stops after this many responses (bounded seeding)
local field = os.getenv("BENCH_FIELD") or "message"
local limit = tonumber(os.getenv("BENCH_LIMIT") or "0")
local threads = 0
local counter = 0
local responses = 0
local thread_id = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local body = string.format('{"%s":"bench message %d-%d from wrk"}', field, thread_id, counter)
  return wrk.format(nil, nil, nil, body)
end

-- Defined only when needed: a response callback makes wrk parse every body.
if limit > 0 then
  function response(status, headers, body)
    responses = responses + 1
    if responses >= limit then
      wrk.thread:stop()
    end
  end
end
