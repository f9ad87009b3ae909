-- Run by wrk (`-s`) when a measurement is cut into slices (SLICE in Benchmarks/l7/bench.py): after
-- its report, wrk prints every latency it recorded, as value:count pairs in microseconds, so that
-- the slices' percentiles can be taken over all their requests together (benchlib.merge_wrk).
-- Only `done` is defined: requests stay wrk's static ones, with no Lua call per request.
done = function(summary, latency, requests)
  local parts = {}
  for i = 1, #latency do
    local value, count = latency(i)
    parts[#parts + 1] = string.format('%d:%d', value, count)
  end
  io.write('latency histogram (us:count): ', table.concat(parts, ','), '\n')
end
