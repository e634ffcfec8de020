"""Developer tools that are not part of the product: the demo, a private Mosquitto broker and a
local paging receiver. The tests, the benchmarks and ``make demo`` use them; no package ships them."""
