import assert from 'node:assert/strict'

import {renderTable} from '../../src/view/table.js'

describe('flow/table renderTable', function () {
  it('left-aligns columns two spaces apart and does not pad the last column', function () {
    const lines = renderTable(
      ['NAME', 'ID', 'STATE'],
      [
        ['eth0', '2', 'up'],
        ['veth-long', '13', 'down'],
      ],
    )
    assert.deepEqual(lines, ['NAME       ID  STATE', 'eth0       2   up', 'veth-long  13  down'])
  })

  it('right-aligns the columns named in `right`', function () {
    const lines = renderTable(
      ['IF', 'PACKETS', 'BYTES'],
      [
        ['a', '1', '100'],
        ['b', '12345678', '7'],
      ],
      {right: [1, 2]},
    )
    assert.deepEqual(lines, ['IF   PACKETS  BYTES', 'a          1    100', 'b   12345678      7'])
  })

  it('uses the widths it is given', function () {
    const lines = renderTable(['A', 'B', 'C'], [['x', '1', 'y']], {right: [1], widths: [4, 3, 1]})
    assert.deepEqual(lines, ['A       B  C', 'x       1  y'])
  })

  it('drops trailing blanks of empty trailing cells', function () {
    const lines = renderTable(['A', 'B', 'C'], [['x', '', '']])
    assert.deepEqual(lines, ['A  B  C', 'x'])
  })

  it('renders just the header for no rows', function () {
    assert.deepEqual(renderTable(['A', 'LONG'], []), ['A  LONG'])
  })
})
