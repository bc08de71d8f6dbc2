"""The app, on top of every layer: the `smile-synth` CLI and the commands behind it. The only
package that imports click."""
