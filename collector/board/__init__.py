"""The maintenance board: static pages served by the collector under ``/board/`` and the pure
functions that shape fleet and evidence data for them (``collector.board.routes`` serves those)."""
