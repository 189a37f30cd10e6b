// In CI a skipped test is a failure: an end-to-end test that could not run proved nothing.
module.exports = {
  spec: ['dist/test/**/*.test.js'],
  timeout: 120000,
  slow: 5000,
  forbidPending: process.env.CI === 'true',
  forbidOnly: process.env.CI === 'true',
}
