"""Portal operations (seed 000's customer area, and the rest of the data):
validation first, then the write, in the caller's transaction.

Every function takes an open `Connection` inside a transaction and raises
`DivertError` before anything is committed, so a refused change leaves no
trace.
"""
