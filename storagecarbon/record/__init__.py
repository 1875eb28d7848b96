"""Recording: the recorder (sampling thread, trace writer, command runner), the sensors, the tier map (which
device a path, disk or GPU is) and the process-group launcher every engine uses.

Public entry points: :func:`storagecarbon.record.recorder.record_command` (``storagecarbon record``),
:class:`storagecarbon.record.recorder.Recorder`, :func:`storagecarbon.record.recorder.emit_marker` (a program's own
phase markers into a running recording).
"""
