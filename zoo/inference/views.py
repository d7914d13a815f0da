"""Test-time views: the flips and quarter turns whose mean count a test may report beside the image as given.

Constants only (the CLI lists the counts in --help without importing torch).
"""

#: (quarter turns, left-right flip), the image as given first. The first 2 add the left-right flip (right for street
#: scenes), the first 4 the symmetries of a rectangle (up-down flip, half turn), all 8 the quarter turns too (for
#: images with no up, such as cells).
VIEWS = ((0, False), (0, True), (2, True), (2, False), (1, False), (1, True), (3, False), (3, True))
#: how many of VIEWS a count may average
VIEW_COUNTS = (1, 2, 4, 8)
