"""The node-local forward-table store, defined once for both sides: its
format (`format`), the cached reader Kamailio uses (`reader`), and the
writer only the sync worker uses (`writer`, with the store's generations)."""
