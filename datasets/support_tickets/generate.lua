-- Generates the support-ticket dataset: telecom customer tickets labelled
-- with a category and a priority, in the shape of the public fine-tuning
-- tutorials (see CARD.md).
--
--   moonforge exec datasets/support_tickets/generate.lua [--out DIR] [--counts 800,100,200] [--seed 2024]
--
-- Writes DIR/raw/{train,eval,test}.jsonl ({ticket, category, priority}) and
-- DIR/chat/{train,eval,test}.jsonl (CHAT_COMPLETION rows: a system prompt
-- listing the categories, the ticket, the category), then prints the
-- SHA-256 of each file and the accuracy of a keyword baseline on the test
-- split. DIR defaults to this script's folder. Ticket i of a split draws
-- from its own stream of the engine's counter-based generator, so the same
-- seed and counts give the same bytes on any machine.
--
-- Tickets are built to defeat keyword matching: many paraphrases per
-- category (most avoid the obvious words), customer context, a secondary
-- concern from another category, misleading words of other categories
-- inside the primary request, typos, and moods from polite to furious.
local data = require "moonforge.data"
local engine = require "moonforge.engine"
local host = require "moonforge.host"
local json = require "moonforge.json"
local new_rng = require("moonforge.ctx").rng

local CATEGORIES = { "Roaming fees", "Slow data speed", "Lost phone", "Add new line", "Closing account" }
local PRIORITIES = { "Not Urgent", "Urgent", "Impacting the Prod" }

local SYSTEM_PROMPT = "You are a support assistant for a mobile phone operator. Read the customer's ticket and "
  .. "answer with its category only, one of: Roaming fees, Slow data speed, Lost phone, Add new line, "
  .. "Closing account."

------------------------------------------------------------------------
-- Vocabulary: slots filled into the templates below
------------------------------------------------------------------------

local SLOTS = {
  country = { "Spain", "Mexico", "Canada", "France", "Japan", "Italy", "Germany", "Brazil", "Thailand", "Portugal",
    "Greece", "the UK", "Morocco", "Turkey", "Iceland", "Peru", "Vietnam", "Croatia" },
  device = { "iPhone 14", "Galaxy S23", "Pixel 8", "Moto G", "iPhone 12 mini", "OnePlus 11", "Galaxy A54",
    "iPhone SE", "Pixel 7a", "phone" },
  person = { "my daughter", "my son", "my wife", "my husband", "my mother", "my dad", "a new employee",
    "my business partner", "my teenager", "my grandmother", "our nanny" },
  duration = { "for three days", "since Monday", "for over a week", "since the update last night",
    "for about a month", "all weekend", "since yesterday afternoon", "for the past two weeks" },
  place = { "downtown", "at home", "at the office", "in my neighborhood", "on the train", "at my parents' place",
    "in the city center" },
  competitor = { "another carrier", "a cheaper provider", "my employer's plan", "a prepaid company",
    "the cable company's mobile offer" },
  when = { "this morning", "last night", "an hour ago", "on Saturday", "yesterday at the mall", "during my commute" },
  city = { "Denver", "Austin", "Portland", "Chicago", "Miami", "Boston", "Phoenix", "Atlanta", "Seattle" },
  name = { "Maria", "James", "Aisha", "Tom", "Priya", "Luis", "Chen", "Olga", "Kwame", "Sophie", "Daniel", "Fatima",
    "Ben", "Yuki", "Rosa" },
  plan = { "Unlimited Plus", "Family Share 40GB", "Basic 5GB", "Business Pro", "Prepaid Flex", "Unlimited Starter" },
  event = { "the tower work on my street", "your maintenance last Tuesday", "I upgraded my plan",
    "the software update", "I moved apartments" },
}

-- Generated slots: amounts, counts, years, numbers.
local function amount(rng) return string.format("$%d.%02d", rng:int(12, 480), rng:int(0, 99)) end
local GENERATED = {
  amount = amount,
  n = function(rng) return tostring(rng:int(2, 12)) end,
  years = function(rng) return tostring(rng:int(2, 19)) end,
  digits = function(rng) return string.format("%04d", rng:int(0, 9999)) end,
  ref = function(rng) return string.format("%s-%06d", ({ "PR", "CASE", "RPT" })[rng:int(1, 3)], rng:int(0, 999999)) end,
}

------------------------------------------------------------------------
-- Primary requests, by category. Many avoid the category's obvious words;
-- some carry words of another category on purpose.
------------------------------------------------------------------------

local PRIMARY = {
  ["Roaming fees"] = {
    "I just got back from {country} and my bill is {amount} higher than usual. I had the travel pass on, so why am I being charged?",
    "There are international usage charges of {amount} on my statement from my trip to {country}. I barely touched the phone there.",
    "Can you explain the out-of-network charges on my last invoice? I was in {country} for a week.",
    "I'm planning a trip to {country} next month. What will it cost to use my phone there? I don't want a surprise bill like last time.",
    "My son used his phone in {country} on a school trip and we were billed {amount}. Nobody warned us it wasn't included.",
    "I switched off data roaming before landing in {country} and still got charged {amount} for data.",
    "Why does my bill show daily fees for {country}? I only made two calls to my hotel.",
    "The day pass for {country} was supposed to be ten dollars a day, yet I was charged {amount}. Please refund the difference.",
    "I was on a cruise and the phone latched onto the ship's network. Now there's a {amount} charge. Is that right?",
    "I live near the border with {country} and my phone keeps grabbing a foreign tower, so I'm billed as if abroad for calls from my own kitchen.",
    "Is there a package for using my line while travelling? The per-megabyte rates outside the country are crazy.",
    "Got a text welcoming me to {country} and now there are {amount} of extra charges. I never left the airport, it was a layover!",
    "The data in {country} was painfully slow and you still charged me {amount} for it.",
    "My invoice has a line item called 'intl usage' for {amount}. I added the travel add-on before I left for {country}.",
    "I need a refund: the bill for my week in {country} came to {amount} even though the agent in the store said it was covered.",
    "Which countries does my {plan} plan include? I was billed {amount} after visiting {country} and thought it was one of them.",
  },
  ["Slow data speed"] = {
    "My mobile internet has been crawling {duration}. Pages won't load and videos keep buffering.",
    "I pay for 5G but I'm getting about 1 Mbps {place}. I ran the speed test five times.",
    "Ever since {event}, streaming is impossible and apps time out.",
    "Is there an outage in my area? Everything on my phone loads at a snail's pace.",
    "The hotspot from my {device} is too sluggish to join a video call anymore.",
    "Did you throttle me? I haven't used my full allowance but everything is sluggish.",
    "Internet on my phone works fine over wifi but on the cellular network it barely loads.",
    "My {device} shows full bars yet web pages take a minute to open {place}.",
    "I can't upload photos or send voice notes; the connection stalls {duration}.",
    "Since I came back from {country}, browsing on my phone has been extremely slow at home.",
    "My husband's new line gets good speeds but mine, on the same plan, is painfully slow.",
    "Maps won't load while I'm driving {place}, which makes my delivery job impossible.",
    "I'm thinking about cancelling if this doesn't improve: my phone can't even load email {place}.",
    "Downloads that used to take seconds now take ten minutes {duration}. Same phone, same plan.",
    "Video calls freeze constantly and my {device} drops to 3G {place} even though I'm paying for {plan}.",
    "The connection is so bad I lost my place in an online exam. Speeds are a fraction of what the {plan} plan promises.",
  },
  ["Lost phone"] = {
    "I left my {device} in a taxi {when} and can't get it back. Can you suspend the line?",
    "My phone was stolen {when}. Please block it so nobody can use my number.",
    "I can't find my phone anywhere. How do I get a replacement SIM for my number?",
    "Someone grabbed my {device} on the subway {when}. I need to make sure they can't run up charges.",
    "I dropped my phone in the lake while fishing and it's gone. I need a new one with the same number.",
    "My phone went missing while I was in {country}; can you lock it before someone makes international calls on my account?",
    "Our house was broken into {when} and my {device} was taken. The police report number is {ref}.",
    "I misplaced my mobile at a concert. Can you help me track it or disable it?",
    "My {device} was pickpocketed {when}; I need a replacement handset and I want to keep my plan.",
    "Lost my cell. Need the IMEI blacklisted and a new SIM sent to {city}.",
    "My daughter's phone disappeared at school; it's the second line on my account. Can we pause it until we find it?",
    "Please cancel the SIM in my stolen phone right away. Not my account, just that SIM.",
    "I think I left my {device} on the plane back from {country}. The airline has nothing. What are my options?",
    "My bag was snatched {when} with my phone in it. Someone has already tried to log into my banking app.",
    "The courier says my new {device} was delivered but it never arrived, and my old one is already gone. How do I get service back?",
  },
  ["Add new line"] = {
    "I'd like to add {person} to my plan. What do we need to do?",
    "How much would another line cost on my {plan} plan?",
    "We just hired {n} people and need phone numbers for them on our business account.",
    "{person} is getting a first phone. Can I put them on my account instead of a separate contract?",
    "I want a second number for my side business on the same bill.",
    "Can I add a tablet with its own data to my account?",
    "I'm bringing {person} over from {competitor}. Can we port that number onto my plan?",
    "Is there a promotion for adding a line? My data is a bit slow sometimes but I'm happy with your prices.",
    "I need an extra SIM for a smartwatch so it works without my phone.",
    "Please set up an additional number for {person}, who's moving back home after college.",
    "I'm closing my old prepaid account with {competitor} and want to join my wife's plan with you instead.",
    "Before our trip to {country} I want a number for {person} so they can reach us. Would it include roaming?",
    "Can I get one more SIM under my name for {person}? The store said to ask support.",
    "Our team is growing: we need {n} more numbers on the {plan} account by the first of the month.",
    "My phone was stolen last year and I gave up the number, but now I'd like a new number back on my plan for {person}.",
  },
  ["Closing account"] = {
    "I'm moving to {country} permanently and want to end my service with you.",
    "Please cancel my contract at the end of this billing cycle.",
    "I've found a better deal with {competitor} and would like to terminate my account.",
    "My father passed away and I need to close his account. How do I do that?",
    "How do I close my account, and what are the early termination fees?",
    "After the {amount} roaming bill you hit me with last month, I'm done. Shut down my account.",
    "I'm switching providers. Can you give me the number transfer code and close everything afterwards?",
    "The data here has been so slow for months that I'm leaving. Please disconnect all my lines.",
    "We're winding down our company, so all {n} business lines and the master account need to be shut off.",
    "Please stop my service and send me the final bill. I no longer need a phone plan.",
    "I want to discontinue service; my employer gives me a phone now.",
    "Since my phone was stolen I've decided not to replace it. Please end my plan entirely.",
    "I'd like to know the last day I can cancel without paying for another month. I'm going with {competitor}.",
    "My {person} and I are merging onto one plan with {competitor}, so this account should be closed.",
    "Please remove me as a customer. I've been with you {years} years and I'm tired of the price increases.",
  },
}

-- A second, lesser concern from another category.
local SECONDARY = {
  ["Roaming fees"] = { "By the way, does my plan cover calls from {country}?",
    "Side question: what are the roaming rates in Europe?",
    "I also noticed a small international charge on the bill, but that can wait.",
    "Unrelated: will my phone work in {country} in the summer?" },
  ["Slow data speed"] = { "Unrelated, but my data has felt a bit slow lately.",
    "Also, the speed at home isn't great, though that's not why I'm writing.",
    "(The connection has been slow too, but whatever.)",
    "Separately, my internet drops out {place} sometimes." },
  ["Lost phone"] = { "P.S. my old phone was stolen last year, so the device on file is outdated.",
    "I lost a phone once before, so I know the drill with the SIM.",
    "Also, please update my records: the {device} listed on my account was lost ages ago." },
  ["Add new line"] = { "Later this year I might want to add a line for {person}.",
    "At some point I'd also like to ask about getting another number.",
    "Another thing for later: could {person} join my plan next month?" },
  ["Closing account"] = { "If this keeps happening I may close my account.",
    "Honestly I've been thinking about cancelling.",
    "My partner keeps telling me to switch to {competitor}." },
}

local PRIORITY_CUES = {
  ["Not Urgent"] = { "No rush on this.", "Whenever you get a chance.", "This can wait until next week.",
    "Just curious, nothing urgent.", "", "", "" },
  ["Urgent"] = { "Please handle this today.", "I need this sorted ASAP.", "This is urgent, I'm stuck without service.",
    "I have a flight tomorrow morning, so please hurry.", "Please reply quickly, it's time sensitive.",
    "I need an answer before end of day." },
  ["Impacting the Prod"] = {
    "Our whole sales team is affected and we can't reach customers.",
    "This is halting our delivery operations right now.",
    "Our card terminals run on these lines and we can't take payments.",
    "Our field crews can't receive work orders, production is stopped.",
    "The clinic's on-call doctors depend on these phones, this is business critical.",
  },
}

local BUSINESS_CONTEXT = "This is about our business account with {n} lines."
local CONTEXTS = { "I've been a customer for {years} years.", "I'm on the {plan} plan.", "Account holder: {name}.",
  BUSINESS_CONTEXT, "My number ends in {digits}.",
  "I'm writing from my work email because I can't use my phone.", "I called yesterday but got nowhere." }
local GREETINGS = { "Hi,", "Hello team,", "Good morning,", "Hey", "To whom it may concern,", "Dear support,",
  "Hi there!", "Hello,", "", "", "" }
local SIGNOFFS = { "Thanks, {name}", "Regards,\n{name}", "Thank you!", "Cheers", "Best, {name}", "{name}", "", "" }
local ANGER = { "This is ridiculous.", "I'm extremely frustrated.", "Third time I'm contacting you!!",
  "Unbelievable service.", "I expect better after all these years." }

------------------------------------------------------------------------
-- Composing a ticket
------------------------------------------------------------------------

local function pick(rng, list) return list[rng:int(1, #list)] end

local function fill(rng, template)
  return (template:gsub("{(%w+)}", function(slot)
    if GENERATED[slot] then return GENERATED[slot](rng) end
    return pick(rng, assert(SLOTS[slot], slot))
  end))
end

-- Typing slips in a few words: swapped, dropped or doubled letters.
local function typos(rng, text, rate)
  return (text:gsub("%a%a%a%a+", function(word)
    if rng:uniform() >= rate then return word end
    local i, kind = rng:int(2, #word - 1), rng:int(1, 3)
    if kind == 1 then return word:sub(1, i - 1) .. word:sub(i + 1, i + 1) .. word:sub(i, i) .. word:sub(i + 2) end
    if kind == 2 then return word:sub(1, i - 1) .. word:sub(i + 1) end
    return word:sub(1, i) .. word:sub(i, i) .. word:sub(i + 1)
  end))
end

local function weighted_priority(rng)
  local u = rng:uniform()
  if u < 0.45 then return PRIORITIES[1] end
  if u < 0.85 then return PRIORITIES[2] end
  return PRIORITIES[3]
end

local function other_category(rng, category)
  local c = category
  while c == category do c = pick(rng, CATEGORIES) end
  return c
end

local function ticket(rng)
  local category, priority = pick(rng, CATEGORIES), weighted_priority(rng)
  local angry = rng:uniform() < 0.2
  local body = { fill(rng, pick(rng, PRIMARY[category])) }
  if rng:uniform() < 0.45 then
    local extra = fill(rng, pick(rng, SECONDARY[other_category(rng, category)]))
    if rng:uniform() < 0.4 then
      body = { "Quick thing first: " .. extra, "But the main reason I'm writing: " .. body[1] }
    else
      body[#body + 1] = extra
    end
  end
  if priority == "Impacting the Prod" then
    table.insert(body, 1, fill(rng, BUSINESS_CONTEXT))
  elseif rng:uniform() < 0.5 then
    table.insert(body, 1, fill(rng, pick(rng, CONTEXTS)))
  end
  if angry then table.insert(body, rng:int(1, #body + 1), pick(rng, ANGER)) end
  body[#body + 1] = pick(rng, PRIORITY_CUES[priority])
  local text = table.concat(body, " "):gsub("%s+$", "")
  if angry and rng:uniform() < 0.3 then text = text:upper() end
  if rng:uniform() < 0.35 then text = typos(rng, text, 0.08) end
  if rng:uniform() < 0.1 then text = text:lower():gsub("[.!]", "") end
  local greeting, signoff = pick(rng, GREETINGS), fill(rng, pick(rng, SIGNOFFS))
  text = (greeting ~= "" and (greeting .. "\n") or "") .. text .. (signoff ~= "" and ("\n" .. signoff) or "")
  return { ticket = text, category = category, priority = priority }
end

-- Splits of the given sizes; no ticket appears twice in the dataset, even
-- up to case, spacing and punctuation.
local function generate(seed, counts)
  local seen, splits = {}, {}
  for _, split in ipairs({ "train", "eval", "test" }) do
    local rows, i = {}, 0
    while #rows < counts[split] do
      i = i + 1
      local t = ticket(new_rng(seed, split .. " " .. i))
      local key = data.normalize_text(t.ticket)
      if not seen[key] then
        seen[key] = true
        rows[#rows + 1] = t
      end
    end
    splits[split] = rows
  end
  return splits
end

------------------------------------------------------------------------
-- The keyword baseline: the category whose keywords occur most often in the
-- lowercased ticket (ties to the first in CATEGORIES; none: the first).
------------------------------------------------------------------------

local KEYWORDS = {
  ["Roaming fees"] = { "roaming", "abroad", "international", "travel", "country", "countries" },
  ["Slow data speed"] = { "slow", "speed", "data", "loading", "buffering", "mbps" },
  ["Lost phone"] = { "lost", "stolen", "missing", "find", "theft" },
  ["Add new line"] = { "new line", "add", "another line", "additional", "extra" },
  ["Closing account"] = { "close", "cancel", "terminate", "end my", "leaving", "switch" },
}

local function keyword_guess(text)
  text = text:lower()
  local best, best_hits = CATEGORIES[1], 0
  for _, category in ipairs(CATEGORIES) do
    local hits = 0
    for _, word in ipairs(KEYWORDS[category]) do
      local start = 1
      while true do
        local at = text:find(word, start, true)
        if not at then break end
        hits, start = hits + 1, at + #word
      end
    end
    if hits > best_hits then best, best_hits = category, hits end
  end
  return best
end

local function keyword_accuracy(rows)
  local right = 0
  for _, row in ipairs(rows) do
    if keyword_guess(row.ticket) == row.category then right = right + 1 end
  end
  return right / #rows
end

------------------------------------------------------------------------
-- Files
------------------------------------------------------------------------

local function write_jsonl(path, rows)
  local lines = {}
  for i, row in ipairs(rows) do lines[i] = json.encode(row) end
  local ok, err = host.write_atomic(path, table.concat(lines, "\n") .. "\n")
  if not ok then error(err, 0) end
  return engine.sha256_file(path)
end

local function chat_row(t)
  return { messages = { { role = "system", content = SYSTEM_PROMPT }, { role = "user", content = t.ticket },
    { role = "assistant", content = t.category } } }
end

local function parse_args(args)
  local here = (args[0] or ""):match("^(.*)/[^/]*$") or "."
  local opts = { out = here, seed = 2024, counts = { train = 800, eval = 100, test = 200 } }
  local i = 1
  while args[i] do
    local key, value = args[i], args[i + 1]
    if key == "--out" then
      opts.out = value
    elseif key == "--seed" then
      opts.seed = tonumber(value)
    elseif key == "--counts" then
      local train, eval, test = (value or ""):match("^(%d+),(%d+),(%d+)$")
      if not train then error("--counts takes TRAIN,EVAL,TEST, e.g. 800,100,200", 0) end
      opts.counts = { train = tonumber(train), eval = tonumber(eval), test = tonumber(test) }
    else
      error("unknown option " .. key .. " (--out DIR, --counts A,B,C, --seed N)", 0)
    end
    i = i + 2
  end
  return opts
end

local opts = parse_args(arg)
local splits = generate(opts.seed, opts.counts)
for _, form in ipairs({ "raw", "chat" }) do
  assert(host.mkdir_p(opts.out .. "/" .. form))
  for _, split in ipairs({ "train", "eval", "test" }) do
    local rows = splits[split]
    if form == "chat" then
      rows = {}
      for i, t in ipairs(splits[split]) do rows[i] = chat_row(t) end
    end
    local name = form .. "/" .. split .. ".jsonl"
    print(string.format("%s  %s  %d rows", write_jsonl(opts.out .. "/" .. name, rows), name, #rows))
  end
end
print(string.format("keyword baseline accuracy on test: %.1f%%", 100 * keyword_accuracy(splits.test)))
return 0
