"""ser-edge device runtime: fixed-point front end, interpreter wrapper, streaming classifier, serial device.

Imports with numpy alone; interpreters, soundfile, sounddevice and pyserial are loaded only when used.
"""
__version__ = "0.1.0"
