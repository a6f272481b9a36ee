-- hello: a tour of what a recipe can do, with no model in sight.
--
-- It draws noisy points on a line, fits the line back by least squares
-- (batch, then by stochastic gradient descent with a logged loss curve),
-- and reports how close each estimate came. Try:
--   moonforge run recipes/hello.lua
--   moonforge run recipes/hello.lua --set noise=0.5     (every cell re-runs)
--   edit the "sgd" cell, run again: only it and "compare" re-run
--   moonforge reproduce <run id>
local mf = require "moonforge"

local r = mf.recipe{
  name = "hello",
  seed = 42,
  params = { n = 1000, slope = 2.5, intercept = -1, noise = 0.3, epochs = 20, lr = 0.05 },
}

-- Shared helper: code outside the cells is part of every cell's cache key.
local function mean(xs)
  local s = 0
  for i = 1, #xs do s = s + xs[i] end
  return s / #xs
end

r:cell("make data", function(ctx)
  local p = ctx.params
  local xs, ys = {}, {}
  for i = 1, p.n do
    xs[i] = ctx.rng:uniform(-1, 1)
    ys[i] = p.slope * xs[i] + p.intercept + ctx.rng:normal(0, p.noise)
  end
  print(string.format("drew %d points on y = %g x + %g with noise %g", p.n, p.slope, p.intercept, p.noise))
  ctx:metric("data/mean_y", mean(ys))
  return { x = xs, y = ys }
end)

r:cell("least squares", { uses = { "make data" } }, function(ctx, data)
  local mx, my = mean(data.x), mean(data.y)
  local sxy, sxx = 0, 0
  for i = 1, #data.x do
    sxy = sxy + (data.x[i] - mx) * (data.y[i] - my)
    sxx = sxx + (data.x[i] - mx) ^ 2
  end
  local slope = sxy / sxx
  local fit = { slope = slope, intercept = my - slope * mx }
  ctx:metric("ls/slope", fit.slope)
  ctx:metric("ls/intercept", fit.intercept)
  return fit
end)

r:cell("sgd", { uses = { "make data" } }, function(ctx, data)
  local p = ctx.params
  local w, b = 0, 0
  local order = {}
  for i = 1, #data.x do order[i] = i end
  local bar = ctx:progress(p.epochs, "sgd epochs")
  local losses = {}
  for epoch = 1, p.epochs do
    ctx.rng:shuffle(order)
    local loss = 0
    for _, i in ipairs(order) do
      local err = w * data.x[i] + b - data.y[i]
      loss = loss + err * err
      w = w - p.lr * err * data.x[i]
      b = b - p.lr * err
    end
    losses[epoch] = loss / #order
    ctx:metric("sgd/loss", losses[epoch], epoch)
    bar:advance(1, string.format("loss %.4f", losses[epoch]))
  end
  bar:finish()
  local steps = {}
  for i = 1, #losses do steps[i] = i end
  ctx:plot{ kind = "line", title = "SGD loss", xlabel = "epoch", ylabel = "mean squared error", logy = true,
    series = { { name = "train", x = steps, y = losses } } }
  return { slope = w, intercept = b }
end)

r:cell("compare", { uses = { "least squares", "sgd" } }, function(ctx, ls, sgd)
  local p = ctx.params
  local rows = {}
  for _, fit in ipairs({ { "least squares", ls }, { "sgd", sgd } }) do
    local name, f = fit[1], fit[2]
    rows[#rows + 1] = { name, f.slope, f.intercept, math.abs(f.slope - p.slope) + math.abs(f.intercept - p.intercept) }
  end
  ctx:table{ title = "estimates", columns = { "method", "slope", "intercept", "abs error" }, rows = rows }
  ctx:plot{ kind = "bar", title = "estimates against the truth", ylabel = "value",
    labels = { "slope", "intercept" },
    series = {
      { name = "truth", values = { p.slope, p.intercept } },
      { name = "least squares", values = { ls.slope, ls.intercept } },
      { name = "sgd", values = { sgd.slope, sgd.intercept } },
    } }
  ctx:metric("error/least_squares", rows[1][4])
  ctx:metric("error/sgd", rows[2][4])
  local path = ctx:tmpdir() .. "/fit.csv"
  local f = assert(io.open(path, "w"))
  f:write("method,slope,intercept\n")
  for _, row in ipairs(rows) do f:write(string.format("%s,%.17g,%.17g\n", row[1], row[2], row[3])) end
  f:close()
  ctx:artifact(path)
end)

return r
